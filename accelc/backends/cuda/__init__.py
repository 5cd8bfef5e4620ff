"""The CUDA backend: targets a100, a10g, l4, l40s, rtx4090 (sm_80/86/89) and h100, h200 (sm_90a).

``lower`` generates CUDA C++ (one kernel per node, named after it; CUTLASS GEMMs in their own cached
translation units; a fused attention kernel for matched attention subgraphs), builds it with nvcc into
``model.so`` (cudart linked statically: the library needs only the NVIDIA driver) exporting the same C
ABI as the CPU library plus ``accelc_run_device`` for device pointers, and returns the artifact parts.
"""
from __future__ import annotations

import time

from ...errors import BackendError
from ...ir import Graph, Node
from ...targets import Target
from ..base import BackendOptions, CompiledParts
from .arch import arch_for
from .build import CudaBuilder
from .codegen import generate
from .lowering import LOWERINGS

KERNELS_HEADER = "accelc_model.h"


class CudaBackend:
    name = "cuda"

    def unsupported(self, graph: Graph, target: Target) -> list[tuple[Node, str]]:
        from . import codegen  # noqa: F401  (fills LOWERINGS)
        arch_for(target)
        missing = []
        for node in graph.nodes:
            lw = LOWERINGS.get(node.op)
            if lw is None:
                missing.append((node, f"no CUDA lowering for {node.op}"))
                continue
            for v in list(node.inputs) + list(node.outputs):
                if v and not graph.types[v].is_static:
                    missing.append((node, f"value '{v}' has the non-static shape {graph.types[v]}; "
                                          f"fix the symbolic dims with --shape"))
                    break
            else:
                reason = lw.check(graph, node) if lw.check else None
                if reason:
                    missing.append((node, reason))
        return missing

    def lower(self, graph: Graph, target: Target, options: BackendOptions) -> CompiledParts:
        arch = arch_for(target)
        missing = self.unsupported(graph, target)
        if missing:
            details = "; ".join(f"{n.op} '{n.name}': {r}" for n, r in missing[:10])
            raise BackendError(f"{len(missing)} node(s) cannot be lowered for '{target.name}': {details}")
        t0 = time.perf_counter()
        gen = generate(graph, arch, options)
        t_gen = time.perf_counter() - t0
        emulate = bool(getattr(options, "emulate", False))
        t0 = time.perf_counter()
        if emulate:
            from .emulate import build_emulated
            library, stats = build_emulated(gen, options.cache_dir), {}
        else:
            builder = CudaBuilder(arch, options.cache_dir, getattr(options, "cutlass_dir", None),
                                  log=print if options.verbose else None)
            library, stats = builder.build(gen.files, gen.gemm_sources), builder.stats
        t_build = time.perf_counter() - t0
        from .build import KERNELS_DIR
        files = {"model.so": library, "weights.bin": gen.weights,
                 "include/accelc_model.h": (KERNELS_DIR / "accelc_model.h").read_bytes()}
        for name, text in {**gen.files, **gen.gemm_sources}.items():
            files[f"src/{name}"] = text.encode()
        manifest = {
            "name": "cuda", "emulated": emulate, "library": "model.so", "weights": "weights.bin", "abi_version": 1,
            "variants": [arch.sm], "archs": [arch.sm], "gencode": list(arch.gencode),
            "arena_bytes": gen.arena_bytes, "arena_naive_bytes": gen.naive_bytes, "weights_bytes": len(gen.weights),
            "kernels": gen.kernels, "gemm_instances": sorted(gen.gemm_sources), "fused_attention": gen.attention_nodes,
            "narrowed_operands": gen.narrowed, "fused_norm_prologues": gen.norm_prologues,
            "channels_last_convs": gen.channels_last,
            "cuda_graph": not options.debug and not emulate,
            "build": {"generate_s": round(t_gen, 3), "build_s": round(t_build, 3), **stats},
        }
        return CompiledParts(files, manifest)


__all__ = ["CudaBackend"]
