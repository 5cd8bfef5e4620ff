"""A small C++ emitter: indentation, blocks, comments and C identifiers for graph values.

Every piece of generated C++ goes through ``CppEmitter`` so that the output is consistently indented and
readable; lowering functions never build multi-line strings by hand.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

_IDENT = re.compile(r"[^A-Za-z0-9_]")


def c_identifier(name: str, prefix: str = "v_") -> str:
    """A C identifier derived from a graph value name (``conv1/out:0`` -> ``v_conv1_out_0``)."""
    return prefix + _IDENT.sub("_", name)


def c_string(text: str) -> str:
    """A C string literal for ``text`` (escapes quotes, backslashes and non-printable characters)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.append("".join(f"\\{b:03o}" for b in ch.encode("utf-8")))
    return '"' + "".join(out) + '"'


def c_float(value: float) -> str:
    """A C float literal that round-trips the fp32 value (inf/nan spelled with <cmath> macros)."""
    v = float(value)
    if v != v:
        return "NAN"
    if v in (float("inf"), float("-inf")):
        return "INFINITY" if v > 0 else "(-INFINITY)"
    text = repr(v)
    if "e" not in text and "." not in text:
        text += ".0"
    return f"{text}f" if abs(v) < 3.4e38 else text


def c_int_array(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}" if len(values) else "{0}"


class CppEmitter:
    """Collects lines of C++ with managed indentation and unique local names."""

    def __init__(self, indent: str = "  "):
        self._lines: list[str] = []
        self._depth = 0
        self._indent = indent
        self._used: set[str] = set()

    def line(self, text: str = "") -> None:
        self._lines.append((self._indent * self._depth + text) if text else "")

    def lines(self, texts) -> None:
        for t in texts:
            self.line(t)

    def comment(self, text: str) -> None:
        for part in text.splitlines() or [""]:
            self.line(f"// {part}".rstrip())

    def blank(self) -> None:
        if self._lines and self._lines[-1] != "":
            self._lines.append("")

    @contextlib.contextmanager
    def block(self, header: str, close: str = "}") -> Iterator[None]:
        """``header {`` ... ``}``; use close="};" for namespaces/structs as needed."""
        self.line(f"{header} {{" if header else "{")
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.line(close)

    def fresh(self, base: str) -> str:
        """A local name not used before in this emitter (``tables``, ``tables_1``...)."""
        base = _IDENT.sub("_", base)
        name, k = base, 0
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def extend(self, other: "CppEmitter") -> None:
        for text in other._lines:
            self._lines.append((self._indent * self._depth + text) if text else "")

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"
