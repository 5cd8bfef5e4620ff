"""Importing this package registers every IR op. One module per op family."""
from . import elementwise  # noqa: F401
from . import conv, indexing, linalg, normalization, reduce, shape  # noqa: F401
from . import fused  # noqa: F401  (after the families whose references it composes)
