"""Graph -> CUDA C++ for one model: lowering, memory plan, and the generated sources.

Order of work:
1. ``attention_pattern.legalize`` rewrites attention subgraphs into ``accelc_cuda.Attention`` nodes
   handled by a fused kernel (backend-local, see that module).
2. Nodes whose inputs are all constants are evaluated at compile time (their outputs become weights);
   ``layout.channels_last`` turns convolutions into NHWC GEMMs (with an im2col where they need one);
   then ``narrow.narrow_gemm_operands`` lets producers whose only readers are 16-bit GEMMs store the
   16-bit values themselves (no conversion kernel; same bits), and ``fuse_norm.fuse_norm_prologues``
   lets each LayerNorm compute its input (an encoder's residual Add) as it loads it.
3. Each node is lowered (``LOWERINGS``) into kernels + launches, with symbolic arena offsets.
4. ``plan_arena`` (the CPU backend's greedy-by-size planner) places graph inputs, outputs,
   intermediates and scratch in ONE device arena; live ranges are node steps, views extend their root.
5. Rendering: ``accelc_model.cu`` (kernels + ``forward()``), ``accelc_model_config.h`` (signature,
   sizes, offsets, architectures) and ``gemm_<key>.cu`` per CUTLASS instantiation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ...errors import BackendError
from ...ir import DType, Graph, get_op
from ..cpu_amx.codegen_context import numel
from ..cpu_amx.emitter import CppEmitter, c_identifier, c_string
from ..cpu_amx.memory_plan import Buffer, plan_arena, weights_checksum
from . import codegen_elementwise, codegen_linalg, codegen_reduce  # noqa: F401  (register lowerings)
from . import attention_kernel  # noqa: F401
from .arch import Arch
from .attention_pattern import legalize
from .fuse_norm import fuse_norm_prologues
from .layout import channels_last
from .narrow import narrow_gemm_operands
from .lowering import LOWERINGS, LowerCtx, storage


@dataclass
class Generated:
    files: dict[str, str]                   # generated sources: accelc_model.cu, accelc_model_config.h
    gemm_sources: dict[str, str]            # gemm_<key>.cu -> source
    gemm_instances: list                    # the codegen_linalg.GemmInstance behind each of them
    weights: bytes
    arena_bytes: int
    naive_bytes: int
    kernels: int
    attention_nodes: int = 0
    narrowed: int = 0                       # producers that store 16-bit GEMM operands themselves
    norm_prologues: int = 0                 # LayerNorms that compute their elementwise input themselves
    channels_last: int = 0                  # convolutions run as NHWC GEMMs
    notes: list[str] = field(default_factory=list)


def fold_constant_nodes(graph: Graph) -> Graph:
    """Evaluates nodes whose inputs are all constants (shape arithmetic left by the frontend)."""
    g = graph.copy()
    kept = []
    for node in g.nodes:
        if node.inputs and all((not i) or i in g.constants for i in node.inputs) and node.op != "accelc_cuda.Attention":
            args = [np.asarray(g.constants[i]).astype(np.float32) if i and g.constants[i].dtype in
                    (DType.bfloat16.np, DType.float16.np) else (g.constants[i] if i else None) for i in node.inputs]
            outs = get_op(node.op).reference(args, node.attrs)
            for name, value in zip(node.outputs, outs):
                arr = np.asarray(value).astype(g.types[name].dtype.np)
                arr.flags.writeable = False
                g.constants[name] = arr
            continue
        kept.append(node)
    g.nodes = kept
    return g


def generate(graph: Graph, arch: Arch, options) -> Generated:
    graph, n_attention = legalize(graph)
    graph = fold_constant_nodes(graph)
    graph, n_nhwc = channels_last(graph)
    graph, n_narrowed = narrow_gemm_operands(graph, options, arch)
    graph, n_prologues = fuse_norm_prologues(graph)
    ctx = LowerCtx(graph, options, arch)
    for step, node in enumerate(graph.nodes):
        ctx.step, ctx.node = step, node
        ctx.fwd.blank()
        LOWERINGS[node.op].emit(ctx, node)
    ctx.node = None
    end = len(graph.nodes)
    # a graph output folded to a constant gets its own buffer, filled from the weights; a graph input
    # returned as an output simply shares the input's slot
    ctx.step = end
    for k, out in enumerate(graph.outputs):
        if out in graph.constants:
            _copy_constant_output(ctx, out, k)

    # ---- memory plan ------------------------------------------------------------------------------
    def resolve(v: str) -> tuple[str, int]:
        """The value whose buffer holds ``v``'s bytes, and the byte offset where they start (views of views
        add up)."""
        skip = 0
        while v in ctx.aliases:
            skip += ctx.alias_offsets.get(v, 0)
            v = ctx.aliases[v]
        return v, skip

    def root(v: str) -> str:
        return resolve(v)[0]

    last: dict[str, int] = {}
    first: dict[str, int] = {}
    for v in graph.inputs:
        first[v] = 0
    for step, node in enumerate(graph.nodes):
        for o in node.outputs:
            if o:
                first.setdefault(root(o), step)
        for i in node.inputs:
            if i:
                r = root(i)
                last[r] = max(last.get(r, step), step)
    for o in graph.outputs:
        last[root(o)] = end + 1
    buffers = []
    for v in dict.fromkeys(list(graph.inputs) + [o for n in graph.nodes for o in n.outputs if o] + graph.outputs):
        if v in ctx.aliases or v in graph.constants:
            continue
        if v not in graph.types:
            continue
        nbytes = numel(ctx.shape(v)) * graph.types[v].dtype.itemsize
        f = first.get(v, end)
        buffers.append(Buffer(v, nbytes, f, max(last.get(v, f), f)))
    for s in ctx.scratch_requests:
        buffers.append(Buffer(s.symbol, s.nbytes, s.step, s.step))
    plan = plan_arena(buffers)
    offsets = plan.offsets
    weights = ctx.weights.tobytes()

    # ---- model.cu ----------------------------------------------------------------------------------
    em = CppEmitter()
    em.comment(f"accelc generated CUDA code for graph '{graph.name}' ({arch.sm}).")
    em.comment("One kernel (or CUTLASS GEMM call) per graph node; kernels are named after their node.")
    em.line('#include "accelc_cuda_common.cuh"')
    em.line('#include "accelc_gemm_args.h"')
    em.blank()
    for inst in ctx.gemm_instances.values():
        em.line(f'extern "C" cudaError_t {inst.function}(const AccelcGemmArgs* p, cudaStream_t stream);')
        em.line(f'extern "C" size_t {inst.workspace_function}(const AccelcGemmArgs* p);')
    em.blank()
    with em.block("namespace accelc_generated", close="}  // namespace accelc_generated"):
        em.line('const char* g_failed_node = "";')
        em.line("#define ACCELC_CHECK_LAUNCH(label) do { cudaError_t e_ = cudaGetLastError(); "
                "if (e_ != cudaSuccess) { g_failed_node = label; return e_; } } while (0)")
        em.line("#define ACCELC_CHECK_CALL(call, label) do { cudaError_t e_ = (call); "
                "if (e_ != cudaSuccess) { g_failed_node = label; return e_; } } while (0)")
        em.blank()
        em.extend(ctx.kernels)
        em.comment("arena offsets of the kernels' scratch buffers")
        for s in ctx.scratch_requests:
            em.line(f"constexpr size_t {s.symbol} = {offsets[s.symbol]};   // {s.label}")
        em.blank()
        em.comment("the device workspace the GEMMs need on this GPU (stream-K partial sums): the most any call needs")
        with em.block("size_t gemm_workspace_bytes()"):
            em.line("size_t most = 0;")
            for call in dict.fromkeys((inst.workspace_function, init) for inst, init in ctx.gemm_calls):
                with em.block(""):
                    em.line(f"const AccelcGemmArgs g{call[1]};")
                    em.line(f"const size_t n = {call[0]}(&g);")
                    em.line("if (n > most) most = n;")
            em.line("return most;")
        em.blank()
        with em.block("cudaError_t forward(unsigned char* arena, const unsigned char* weights, "
                      "[[maybe_unused]] void* workspace, [[maybe_unused]] size_t workspace_bytes, cudaStream_t stream)"):
            declared = set()
            for v, off in ctx.const_offsets.items():
                em.line(f"[[maybe_unused]] const {storage(graph.types[v].dtype)}* {c_identifier(v)} = "
                        f"reinterpret_cast<const {storage(graph.types[v].dtype)}*>(weights + {off});")
                declared.add(v)
            for v in list(offsets):
                if v in graph.types and v not in declared:
                    em.line(f"[[maybe_unused]] {storage(graph.types[v].dtype)}* {c_identifier(v)} = "
                            f"reinterpret_cast<{storage(graph.types[v].dtype)}*>(arena + {offsets[v]});")
                    declared.add(v)
            for v in ctx.aliases:
                r, skip = resolve(v)
                t = storage(graph.types[v].dtype)
                base = f"weights + {ctx.const_offsets[r] + skip}" if r in ctx.const_offsets else \
                    f"arena + {offsets[r] + skip}"
                const = "const " if r in ctx.const_offsets else ""
                em.line(f"[[maybe_unused]] {const}{t}* {c_identifier(v)} = reinterpret_cast<{const}{t}*>({base});")
            em.extend(ctx.fwd)
            em.blank()
            em.line("return cudaSuccess;")
    model_cu = em.render()

    # ---- config header ------------------------------------------------------------------------------
    def port(v):
        t = graph.types[v]
        return {"name": v, "dtype": t.dtype.short, "shape": [int(d) for d in t.shape]}
    signature = json.dumps({"inputs": [port(v) for v in graph.inputs], "outputs": [port(v) for v in graph.outputs]},
                           separators=(",", ":"))
    h = CppEmitter()
    h.comment("accelc generated model facts (included by accelc_cuda_abi.cu)")
    h.line("#pragma once")
    h.line("#include <cstddef>")
    h.line("#include <cstdint>")
    h.line(f"static const char kAccelcSignatureJson[] = {c_string(signature)};")
    h.line(f'static const char kAccelcArchList[] = "{arch.sm}";')
    h.line("struct AccelcArch { const char* name; int cc; bool exact; };")
    h.line(f'static const AccelcArch kAccelcArchs[] = {{{{"{arch.sm}", {arch.cc}, {str(arch.exact).lower()}}}}};')
    h.line("static const int kAccelcNumArchs = 1;")
    h.line(f"static const unsigned long long kAccelcWeightsBytes = {len(weights)}ULL;")
    h.line(f"static const unsigned long long kAccelcWeightsChecksum = {weights_checksum(weights)}ULL;")
    h.line(f"static const size_t kAccelcArenaBytes = {plan.arena_bytes};")
    h.line(f"static const int kAccelcDisableGraph = {1 if getattr(options, 'debug', False) else 0};")
    for kind, values in (("Input", graph.inputs), ("Output", graph.outputs)):
        n = len(values)
        h.line(f"static const int kAccelcNum{kind}s = {n};")
        offs = [offsets[root(v)] if root(v) in offsets else 0 for v in values]
        sizes = [numel(ctx.shape(v)) * graph.types[v].dtype.itemsize for v in values]
        h.line(f"static const size_t kAccelc{kind}Offsets[] = {{{', '.join(map(str, offs)) or '0'}}};")
        h.line(f"static const size_t kAccelc{kind}Bytes[] = {{{', '.join(map(str, sizes)) or '0'}}};")
        h.line(f"static const char* const kAccelc{kind}Names[] = {{{', '.join(c_string(v) for v in values) or '0'}}};")
    missing = [v for v in graph.outputs if root(v) not in offsets]
    if missing:
        raise BackendError(f"CUDA backend: graph outputs {missing} have no device buffer (internal error)")
    gemm_sources = {f"gemm_{i.key}.cu": i.source() for i in ctx.gemm_instances.values()}
    kernels = model_cu.count("__global__")
    return Generated({"accelc_model.cu": model_cu, "accelc_model_config.h": h.render()}, gemm_sources,
                     list(ctx.gemm_instances.values()), weights,
                     plan.arena_bytes, plan.naive_bytes, kernels, n_attention, n_narrowed, n_prologues, n_nhwc)


def _copy_constant_output(ctx: LowerCtx, out: str, k: int) -> None:
    """A graph output folded to a constant still needs its own device buffer: copy the weights there."""
    from .codegen_elementwise import Operand, View, contiguous_strides, emit_map
    g = ctx.graph
    value = g.constants.pop(out)
    src = g.add_constant(value, g.fresh_name(f"{out}_value"))
    shape = ctx.shape(out)
    ctx.fwd.blank()
    emit_map(ctx, out_ptr=ctx.ptr(out), out_dtype=ctx.dtype(out), out_shape=shape,
             operands=[Operand(ctx.ptr(src), ctx.dtype(src), View(0, contiguous_strides(shape)))],
             body=lambda em, xs: xs[0], comment=f"graph output {out} is the constant {src}", suffix=f"const{k}")
