"""accelc as an ``onnx.backend`` backend, so that ONNX's own node test suite runs against it.

``prepare(model)`` compiles the model for the ``host`` target in fp32 through ``accelc.compile``
(accuracy measurement off: the test suite compares outputs itself) and returns a ``BackendRep`` whose
``run`` returns the outputs in graph order. Builds go through the backend's content-addressed cache,
so a rerun of the suite rebuilds nothing.

    from onnx.backend.test import BackendTest
    from accelc.onnx_backend import AccelcBackend
    tests = BackendTest(AccelcBackend, __name__)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from .errors import AccelcError


class AccelcBackendRep(BackendRep):
    def __init__(self, compiled: Any):
        self.compiled = compiled
        self.input_names = [p["name"] for p in compiled.signature["inputs"]]
        self.output_names = [p["name"] for p in compiled.signature["outputs"]]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = {k: v for k, v in inputs.items() if k in self.input_names}
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.input_names, inputs))
        result = self.compiled.run(feeds)
        return tuple(result[n] for n in self.output_names)


class AccelcBackend(Backend):
    """Compiles for ``host`` in fp32. Options: ``target``, ``dtype``, ``opt_level``, ``cache_dir``, ``emulate``
    (a CUDA target's code run by the host emulator)."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> AccelcBackendRep:
        if not cls.supports_device(device):
            raise AccelcError(f"accelc's ONNX backend runs on CPU, not '{device}'")
        from .compiler import compile as accelc_compile
        compiled = accelc_compile(model, kwargs.get("target", "host"), dtype=kwargs.get("dtype", "fp32"),
                                  opt_level=kwargs.get("opt_level", 2), cache_dir=kwargs.get("cache_dir"),
                                  measure_accuracy=False, emulate=bool(kwargs.get("emulate", False)))
        return AccelcBackendRep(compiled)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple] | None = None, **kwargs: Any) -> tuple[np.ndarray, ...]:
        raise NotImplementedError("accelc compiles whole models; use prepare()/run_model()")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().split(":")[0] == "CPU"


prepare = AccelcBackend.prepare
run_model = AccelcBackend.run_model
supports_device = AccelcBackend.supports_device


# ---- which of ONNX's node tests accelc can attempt ----------------------------------------------------

def supported_onnx_ops() -> dict[str, list[int]]:
    """``op_type -> [since...]`` straight from the frontend's handler table (never a hand-kept list)."""
    from .frontend import onnx_ops  # noqa: F401  (importing the package fills the table)
    from .frontend.onnx_ops.registry import supported_ops
    return supported_ops()


def node_tests_with_supported_ops() -> dict[str, list[str]]:
    """``test name -> ops`` for every ONNX node test whose ops (default domain, at the model's opset)
    all have a frontend handler. ONNX generates its node test cases in memory (a few seconds)."""
    from onnx.backend.test.loader import load_node_model_tests

    from .frontend.onnx_ops.registry import find_handler
    supported_onnx_ops()
    tests: dict[str, list[str]] = {}
    for case in load_node_model_tests():
        model = case.model
        if model is None:
            continue
        opsets = {imp.domain or "": imp.version for imp in model.opset_import}
        ops = sorted({n.op_type for n in model.graph.node})
        if not ops or any(n.domain not in ("", "ai.onnx") for n in model.graph.node):
            continue
        if all(find_handler("", op, opsets.get("", opsets.get("ai.onnx", 1))) is not None for op in ops):
            tests[case.name] = ops
    return tests
