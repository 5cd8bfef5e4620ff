"""Error types raised by accelc.

Every error a user can trigger is one of these, with a message that says what was found, what was
expected and what to do. The CLI prints ``str(error)`` on one line and exits non-zero; it never shows a
traceback for an ``AccelcError``.
"""


class AccelcError(Exception):
    """Base class of every error accelc raises on purpose."""


class ModelLoadError(AccelcError):
    """The model file is missing, unreadable or not a valid model."""


class UnsupportedFeatureError(AccelcError):
    """The model is valid but uses something accelc does not implement (an op, an element type such as
    string or int2, a sequence/optional input). Distinct from ``ModelLoadError``: the file is fine."""


class UnsupportedOpError(UnsupportedFeatureError):
    """One or more ops of a model have no accelc implementation (all of them are listed at once)."""

    def __init__(self, message: str, unsupported: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.unsupported = unsupported or []


class ShapeError(AccelcError):
    """Shapes do not agree, or a dimension is unresolved where a concrete one is needed."""


class VerificationError(AccelcError):
    """A graph broke an IR invariant (SSA, types, topological order). Always a compiler bug or bad input."""


class BackendError(AccelcError):
    """A backend cannot lower or build the graph (unsupported op/dtype on that target, toolchain failure)."""


class BuildError(BackendError):
    """The native toolchain (g++, nvcc) failed."""


class ArtifactError(AccelcError):
    """An artifact is missing, corrupted, tampered with, or from an incompatible version."""


class InputMismatchError(AccelcError):
    """Inputs given at run time do not match the compiled signature (names, dtypes, shapes)."""


class UnsupportedHardwareError(AccelcError):
    """The running machine cannot execute the artifact (missing ISA extension, no GPU...)."""


class TargetError(AccelcError):
    """Unknown target name or bad target option."""
