"""accelc: an ahead-of-time compiler for neural networks (ONNX -> optimized native artifact).

    import accelc
    m = accelc.compile("model.onnx", target="host")   # frontend -> passes -> backend -> artifact
    y = m(x)
    m.save("model.accelc")
    m2 = accelc.load("model.accelc")                   # runtime only: NumPy + the built library

``compile`` is imported lazily, so ``import accelc.runtime`` (or ``accelc.load``) on a deployment box
never pulls in the compiler's frontend, passes or backends.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (AccelcError, ArtifactError, BackendError, BuildError, InputMismatchError, ModelLoadError,
                     ShapeError, TargetError, UnsupportedFeatureError, UnsupportedHardwareError, UnsupportedOpError,
                     VerificationError)
from .runtime import CompiledModule, load

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .compiler import CompiledModel, compile

__all__ = ["__version__", "compile", "load", "CompiledModel", "CompiledModule", "AccelcError", "ArtifactError",
           "BackendError", "BuildError", "InputMismatchError", "ModelLoadError", "ShapeError", "TargetError",
           "UnsupportedFeatureError", "UnsupportedHardwareError", "UnsupportedOpError", "VerificationError"]


def __getattr__(name: str) -> Any:
    if name in ("compile", "CompiledModel"):
        from . import compiler
        return getattr(compiler, name)
    raise AttributeError(f"module 'accelc' has no attribute '{name}'")
