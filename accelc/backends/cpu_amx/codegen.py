"""Code generation of the CPU backend: IR graph -> model.cpp (+ config and public headers, weights.bin).

Steps, each separate: (1) every node is lowered by its registered lowering (``codegen_*`` modules) into a
block of C++ statements with symbolic buffers; (2) the memory plan places every intermediate value and
scratch request in one arena (memory_plan.py); (3) the file is assembled: buffer declarations named after
graph values, then the node blocks in order, each headed by a comment naming the node.

The same model.cpp is compiled once per ISA variant with -DACCELC_NS=accelc_<variant>; the
baseline-compiled dispatcher (runtime_src/accelc_abi.cpp) reads the generated accelc_model_config.h.

Per-node profiling: every node block opens with a ``NodeTimer``. ``run`` takes ``double* node_seconds``
(owned by the model, see accelc_abi.cpp); when it is null a node costs one predictable branch on entry
and one on exit, otherwise the block's wall time (omp_get_wtime) is added to ``node_seconds[step]``.
The labels of the timed nodes (``node_label``) are model facts shared by all variants, so they live in
the config header, not once per variant.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ...errors import BackendError, ShapeError
from ...ir import DType, Graph, Node
from . import codegen_data, codegen_elementwise, codegen_linalg, codegen_reduce  # noqa: F401 (register lowerings)
from .codegen_context import LOWERINGS, LowerCtx, Storage, numel, storage_ctype
from .emitter import CppEmitter, c_identifier, c_string
from .memory_plan import Buffer, WeightsBuilder, plan_arena, weights_checksum


@dataclass
class GeneratedModel:
    model_cpp: str
    config_h: str
    public_h: str
    weights: bytes
    arena_bytes: int
    weights_bytes: int
    signature: dict
    tune_sites: list          # tuning.Site of each ACCELC_BLOCKING(i) in model.cpp
    tune_counts: list         # calls per site


def unsupported_nodes(graph: Graph) -> list[tuple[Node, str]]:
    """Nodes without a lowering, with a non-static shape, or refused by their lowering's check."""
    found = []
    for node in graph.nodes:
        lowering = LOWERINGS.get(node.op)
        if lowering is None:
            found.append((node, f"the CPU backend has no lowering for {node.op}"))
            continue
        values = [v for v in list(node.inputs) + list(node.outputs) if v]
        dynamic = [v for v in values if not graph.types[v].is_static]
        if dynamic:
            found.append((node, "non-static shapes: " + ", ".join(f"{v} {graph.types[v]}" for v in dynamic)))
            continue
        if node.op in ("FusedGemm", "FusedConv") and node.attrs.compute == DType.float16:
            found.append((node, "fp16 products are not supported on CPU targets (use bf16 compute)"))
            continue
        if lowering.check is not None:
            try:
                reason = lowering.check(graph, node)
            except ShapeError as e:
                reason = str(e)
            if reason:
                found.append((node, reason))
    return found


def signature_of(graph: Graph) -> dict:
    def entry(v):
        t = graph.types[v]
        return {"name": v, "dtype": t.dtype.short, "shape": [int(d) for d in t.shape]}
    return {"inputs": [entry(v) for v in graph.inputs], "outputs": [entry(v) for v in graph.outputs]}


def generate(graph: Graph, variants: list[str]) -> GeneratedModel:
    for v in list(graph.inputs) + list(graph.outputs):
        if not graph.types[v].is_static:
            raise ShapeError(f"graph value '{v}' has the non-static shape {graph.types[v]}; the CPU backend needs "
                             f"static shapes (give the input shapes at compile time)")
    problems = unsupported_nodes(graph)
    if problems:
        raise BackendError("the CPU backend cannot lower: " + "; ".join(
            f"{n.op} '{n.name}': {why}" for n, why in problems))

    weights = WeightsBuilder()
    ctx = LowerCtx(graph, weights)
    for i, v in enumerate(graph.inputs):
        ctx.storage[v] = Storage("input", i)
    output_copies: list[tuple[int, str]] = []        # (output index, value) copied after the run
    for j, v in enumerate(graph.outputs):
        if v in ctx.storage or v in graph.constants:
            output_copies.append((j, v))
        else:
            ctx.storage[v] = Storage("output", j)
    produced = {o for n in graph.nodes for o in n.outputs}
    for v in produced:
        ctx.storage.setdefault(v, Storage("arena"))

    blocks: list[tuple[Node, CppEmitter]] = []
    for step, node in enumerate(graph.nodes):
        ctx.step, ctx.node, ctx.em = step, node, CppEmitter()
        LOWERINGS[node.op].emit(ctx, node)
        blocks.append((node, ctx.em))
    for _, v in output_copies:
        ctx.ptr(v)

    # ---- liveness and arena plan ----
    root = ctx.root
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    end = len(graph.nodes)
    for step, node in enumerate(graph.nodes):
        for o in node.outputs:
            r = root(o)
            first.setdefault(r, step)
            last[r] = max(last.get(r, step), step)
        for i in node.inputs:
            if i:
                r = root(i)
                last[r] = max(last.get(r, step), step)
    for _, v in output_copies:
        last[root(v)] = end
    buffers = [Buffer(v, numel(ctx.shape(v)) * ctx.dtype(v).itemsize, first[v], last[v])
               for v in first if ctx.storage.get(v) and ctx.storage[v].kind == "arena"]
    buffers += [Buffer(r.symbol, r.nbytes, r.step, r.step) for r in ctx.scratch_requests]
    plan = plan_arena(buffers)

    model_cpp = _assemble(graph, ctx, blocks, plan, output_copies, root)
    weights_bytes = weights.tobytes()
    sig = signature_of(graph)
    config_h = _config_header(graph, variants, sig, weights_bytes, plan.arena_bytes)
    public_h = _public_header(graph, sig, variants)
    return GeneratedModel(model_cpp, config_h, public_h, weights_bytes, plan.arena_bytes, len(weights_bytes), sig,
                          ctx.tune_sites, ctx.tune_counts)


def _describe(graph: Graph, v: str) -> str:
    return f"{v}: {graph.types[v]}"


def node_label(step: int, node: Node) -> str:
    """How a node is named in comments of model.cpp and in profiles: ``[3] FusedGemm 'fc1'``."""
    return f"[{step}] {node.op} '{node.name}'"


def _assemble(graph: Graph, ctx: LowerCtx, blocks, plan, output_copies, root) -> str:
    em = CppEmitter()
    em.comment(f"Generated by accelc for graph '{graph.name}': {len(graph.nodes)} nodes, arena {plan.arena_bytes} "
               f"bytes (naive {plan.naive_bytes}), weights {ctx.weights.nbytes} bytes.")
    em.comment("Compiled once per ISA variant with -DACCELC_NS=accelc_<variant>; see accelc_model.h for the C ABI.")
    for inc in ("<cmath>", "<cstdint>", "<cstring>", "<omp.h>", '"accelc_types.h"', '"accelc_scalar.h"',
                '"accelc_ops.h"', '"accelc_gemm.h"', '"accelc_tuning.h"'):
        em.line(f"#include {inc}")
    em.blank()
    with em.block("namespace ACCELC_NS", "}  // namespace ACCELC_NS"):
        with em.block("namespace", "}  // namespace"):
            em.line("inline int fail(int code, const char* message) { accelc_internal_set_error(message); return code; }")
            em.blank()
            em.comment("scratch memory of single nodes (byte offsets into the arena)")
            for r in ctx.scratch_requests:
                em.line(f"constexpr size_t {r.symbol} = {plan.offsets[r.symbol]};  // {r.nbytes} bytes: "
                        f"{node_label(r.step, graph.nodes[r.step])}: {r.label}")
            em.blank()
            em.comment("Adds the wall time of one node block to seconds[step] when profiling (seconds != null);")
            em.comment("otherwise costs one predictable branch on entry and one on exit.")
            with em.block("struct NodeTimer", "};"):
                em.line("double* slot;")
                em.line("double start;")
                em.line("NodeTimer(double* seconds, int step) : slot(seconds ? seconds + step : nullptr), "
                        "start(slot ? omp_get_wtime() : 0.0) {}")
                em.line("~NodeTimer() { if (slot) *slot += omp_get_wtime() - start; }")
                em.line("NodeTimer(const NodeTimer&) = delete;")
                em.line("NodeTimer& operator=(const NodeTimer&) = delete;")
        em.blank()
        em.comment("One-time setup of the variant (AMX tile permission); 0 when the variant can run.")
        with em.block("int prepare(const char** reason)"):
            em.line("*reason = nullptr;")
            em.line("#ifdef ACCELC_VARIANT_AMX")
            em.comment("without AMX permission the amx variant computes bf16 with AVX-512 BF16 (amx_init's contract)")
            em.line("(void)amx_init(reason);")
            em.line("#endif")
            em.line("return 0;")
        em.blank()
        em.comment(f"Runs the graph. node_seconds: null, or {len(blocks)} per-node second counters to add to "
                   f"(profiling).")
        with em.block("int run(const void* const* inputs, void* const* outputs, unsigned char* arena, "
                      "const unsigned char* weights, double* node_seconds)"):
            em.line("(void)inputs; (void)outputs; (void)arena; (void)weights; (void)node_seconds;")
            em.comment("graph inputs (caller buffers, read-only)")
            for i, v in enumerate(graph.inputs):
                t = storage_ctype(ctx.dtype(v))
                em.line(f"const {t}* {c_identifier(v)} = static_cast<const {t}*>(inputs[{i}]);  // {_describe(graph, v)}")
            if ctx.const_offsets:
                em.comment("constants (weights.bin)")
            for v, off in ctx.const_offsets.items():
                t = storage_ctype(ctx.dtype(v))
                em.line(f"const {t}* {c_identifier(v)} = reinterpret_cast<const {t}*>(weights + {off});  "
                        f"// {_describe(graph, v)}")
            em.comment("graph outputs (caller buffers) and intermediates (arena)")
            const_roots = set(graph.inputs) | set(ctx.const_offsets)
            for node in graph.nodes:
                for o in node.outputs:
                    st = ctx.storage[o]
                    t = storage_ctype(ctx.dtype(o))
                    if st.kind == "output":
                        em.line(f"{t}* {c_identifier(o)} = static_cast<{t}*>(outputs[{st.index}]);  // {_describe(graph, o)}")
                    elif st.kind == "arena":
                        if o not in plan.offsets:
                            continue
                        em.line(f"{t}* {c_identifier(o)} = reinterpret_cast<{t}*>(arena + {plan.offsets[o]});  "
                                f"// {_describe(graph, o)}")
                    else:
                        q = "const " if root(o) in const_roots else ""
                        em.line(f"{q}{t}* {c_identifier(o)} = reinterpret_cast<{q}{t}*>({c_identifier(st.alias_of)});  "
                                f"// {_describe(graph, o)}, view of {st.alias_of}")
            for step, (node, body) in enumerate(blocks):
                em.blank()
                ins = ", ".join(i or "-" for i in node.inputs)
                outs = ", ".join(node.outputs)
                em.comment(f"{node_label(step, node)} ({ins}) -> {outs}")
                with em.block(""):
                    em.line(f"const NodeTimer accelc_node_timer(node_seconds, {step});")
                    em.extend(body)
            if output_copies:
                em.blank()
                em.comment("outputs that are graph inputs, constants or repeated outputs: copied")
            for j, v in output_copies:
                em.line(f"std::memcpy(outputs[{j}], {c_identifier(v)}, {numel(ctx.shape(v)) * ctx.dtype(v).itemsize});")
            em.line("return 0;")
    return em.render()


def _config_header(graph: Graph, variants: list[str], sig: dict, weights: bytes, arena_bytes: int) -> str:
    em = CppEmitter()
    em.comment("Generated by accelc: facts the dispatcher (accelc_abi.cpp) needs about this model.")
    em.line("#pragma once")
    em.line("#define ACCELC_FOR_EACH_VARIANT(X) " + " ".join(f"X({v})" for v in variants) + "  /* best first */")
    em.line(f"static const char kAccelcVariantList[] = {c_string(','.join(variants))};")
    em.line(f"static const char kAccelcSignatureJson[] = {c_string(json.dumps(sig, separators=(',', ':')))};")
    em.line(f"static const unsigned long long kAccelcWeightsBytes = {len(weights)}ull;")
    em.line(f"static const unsigned long long kAccelcWeightsChecksum = {weights_checksum(weights)}ull;")
    em.line(f"static const unsigned long long kAccelcArenaBytes = {arena_bytes}ull;")
    em.line(f"static const int kAccelcNumInputs = {len(graph.inputs)};")
    em.line(f"static const int kAccelcNumOutputs = {len(graph.outputs)};")
    names_in = ", ".join(c_string(v) for v in graph.inputs) or '""'
    names_out = ", ".join(c_string(v) for v in graph.outputs) or '""'
    em.line(f"static const char* const kAccelcInputNames[] = {{{names_in}}};")
    em.line(f"static const char* const kAccelcOutputNames[] = {{{names_out}}};")
    em.comment("nodes timed by the profiler, in graph order (node_seconds[step] of each variant's run)")
    em.line(f"static const int kAccelcNumNodes = {len(graph.nodes)};")
    labels = ", ".join(c_string(node_label(step, n)) for step, n in enumerate(graph.nodes)) or '""'
    ops = ", ".join(c_string(n.op) for n in graph.nodes) or '""'
    em.line(f"static const char* const kAccelcNodeLabels[] = {{{labels}}};")
    em.line(f"static const char* const kAccelcNodeOps[] = {{{ops}}};")
    return em.render()


def _public_header(graph: Graph, sig: dict, variants: list[str]) -> str:
    em = CppEmitter()
    em.line("/* accelc_model.h: C ABI of an accelc CPU model library (ABI version 1).")
    em.line(" *")
    em.line(f" * Model: {graph.name}. ISA variants in this library, best first: {', '.join(variants)}.")
    em.line(" * Inputs and outputs are dense row-major buffers owned by the caller, in this order:")
    for kind in ("inputs", "outputs"):
        for k, e in enumerate(sig[kind]):
            em.line(f" *   {kind[:-1]} {k}: {e['name']}  {e['dtype']}[{','.join(map(str, e['shape']))}]")
    em.line(" * (f16/bf16 are 16-bit patterns, bool one byte 0/1.)")
    em.line(" *")
    em.line(" * Return codes: 0 ok, 1 the CPU lacks the needed ISA (message names the missing features),")
    em.line(" * 2 weights size or checksum mismatch, 3 out of memory, 4 invalid argument. After a non-zero")
    em.line(" * return, accelc_last_error() (thread-local) explains it. accelc_create copies the weights, so the")
    em.line(" * caller may free them afterwards. A model is safe to run from one thread at a time.")
    em.line(" *")
    em.line(f" * Profiling: the library times each of its {len(graph.nodes)} graph nodes per model when asked.")
    em.line(" * accelc_profile_enable(m, 1) zeroes the model's counters and starts timing; every accelc_run")
    em.line(" * then adds each node's wall time and counts one run; accelc_profile_enable(m, 0) stops (the")
    em.line(" * counters keep their values). Node i (graph order) is named by accelc_profile_node(i), e.g.")
    em.line(" * \"[3] FusedGemm 'fc1'\", and its op by accelc_profile_node_op(i) (NULL when i is out of range).")
    em.line(" * accelc_profile_read copies the seconds per node (capacity >= accelc_profile_count()), the runs")
    em.line(" * and the seconds spent in accelc_run while profiling (runs and run_seconds may be NULL).")
    em.line(" * Profiling off costs two predictable branches per node.")
    em.line(" */")
    em.line("#ifndef ACCELC_MODEL_H")
    em.line("#define ACCELC_MODEL_H")
    em.line("#include <stddef.h>")
    em.line("#ifdef __cplusplus")
    em.line('extern "C" {')
    em.line("#endif")
    em.line("typedef struct accelc_model accelc_model;")
    em.line("int accelc_abi_version(void);                          /* 1 */")
    em.line("const char* accelc_signature_json(void);               /* {\"inputs\":[{name,dtype,shape}],\"outputs\":[...]} */")
    em.line("const char* accelc_variants(void);                     /* variants built in, best first, comma separated */")
    em.line("const char* accelc_select_variant(void);               /* best variant this CPU runs, or NULL */")
    em.line("int accelc_create(const void* weights, size_t weights_size, int num_threads, accelc_model** out);")
    em.line("int accelc_run(accelc_model* m, const void* const* inputs, void* const* outputs);")
    em.line("const char* accelc_model_variant(const accelc_model* m);")
    em.line("void accelc_destroy(accelc_model* m);")
    em.line("const char* accelc_last_error(void);")
    em.line("int accelc_profile_count(void);                        /* nodes timed by the profiler */")
    em.line("const char* accelc_profile_node(int i);                /* \"[i] Op 'name'\", or NULL */")
    em.line("const char* accelc_profile_node_op(int i);             /* \"Op\", or NULL */")
    em.line("int accelc_profile_enable(accelc_model* m, int on);    /* 1: zero the counters and start, 0: stop */")
    em.line("int accelc_profile_read(const accelc_model* m, double* seconds, int capacity, long long* runs,")
    em.line("                        double* run_seconds);")
    em.line("#ifdef __cplusplus")
    em.line("}")
    em.line("#endif")
    em.line("#endif /* ACCELC_MODEL_H */")
    return em.render()
