"""The cpu_amx backend: support table, lowering to C++, build, and the artifact parts.

``lower`` = horizontal.fuse_parallel_gemms (sibling GEMMs -> one) + codegen_attention.legalize
(attention subgraphs -> one fused node) + layout.to_nhwc (convolutional parts channels-last) + codegen.generate
(model.cpp, headers, weights.bin, memory plan) + build.Builder (g++ per ISA variant, cached) ->
CompiledParts with the library, weights, public header and the generated and hand-written sources
for inspection.
"""
from __future__ import annotations

from ...errors import BackendError
from ...ir import Graph, Node
from ...targets import Target
from ..base import BackendOptions, CompiledParts
from . import codegen, codegen_attention, horizontal, isa, layout, tuning
from .build import KERNELS, RUNTIME_SRC, Builder

ABI_VERSION = 1


class CpuAmxBackend:
    name = "cpu_amx"

    def unsupported(self, graph: Graph, target: Target) -> list[tuple[Node, str]]:
        return codegen.unsupported_nodes(graph)

    def lower(self, graph: Graph, target: Target, options: BackendOptions) -> CompiledParts:
        if target.backend != self.name:
            raise BackendError(f"target '{target.name}' is not served by the CPU backend")
        variants = isa.variants_for(target)
        graph, n_wide = horizontal.fuse_parallel_gemms(graph)
        graph, n_attention = codegen_attention.legalize(graph)
        graph, n_nhwc = layout.to_nhwc(graph, winograd=options.winograd)
        n_winograd = layout.count_winograd(graph)
        gen = codegen.generate(graph, variants)
        builder = Builder(options.cache_dir, verbose=options.verbose, debug=options.debug)
        report = None
        if options.tune:
            say = options.progress or (lambda _msg: None)
            say(f"tuning: {len(gen.tune_sites)} distinct GEMM/convolution call sites "
                f"(budget {options.tune_budget_s:g}s)")
            report = tuning.tune(gen.tune_sites, gen.tune_counts, variants, options.threads, builder,
                                 budget_s=options.tune_budget_s, log=lambda m: say(f"tuning: {m}"))
            if report.skipped:
                say(f"tuning: skipped: {report.skipped}")
        tuning_h = tuning.header(report)
        library, src_dir = builder.build_model(gen.model_cpp, gen.config_h, variants, tuning_h)
        files = {
            "model.so": library.read_bytes(),
            "weights.bin": gen.weights,
            "include/accelc_model.h": gen.public_h.encode(),
            "src/model.cpp": gen.model_cpp.encode(),
            "src/accelc_model_config.h": gen.config_h.encode(),
            "src/accelc_tuning.h": tuning_h.encode(),
        }
        for p in sorted(RUNTIME_SRC.iterdir()):
            if p.suffix in (".h", ".cpp"):
                files[f"src/runtime/{p.name}"] = p.read_bytes()
        for p in sorted(KERNELS.iterdir()):
            if p.suffix in (".h", ".cpp"):
                files[f"src/kernels/{p.name}"] = p.read_bytes()
        manifest = {
            "name": self.name,
            "library": "model.so",
            "abi_version": ABI_VERSION,
            "variants": variants,
            "required_isa": {v: list(isa.VARIANTS[v].required) for v in variants},
            "threads": options.threads,
            "arena_bytes": gen.arena_bytes,
            "weights_bytes": gen.weights_bytes,
            "fused_attention": n_attention,
            "merged_gemm_groups": n_wide,
            "nhwc_convolutions": n_nhwc,
            "winograd_convolutions": n_winograd,
            "tuning": report.manifest() if report else None,
        }
        return CompiledParts(files, manifest)


__all__ = ["CpuAmxBackend"]
