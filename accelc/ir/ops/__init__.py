"""Importing this package registers every IR op. One module per op family."""
from . import elementwise  # noqa: F401
