"""Aligned text tables for the benchmarks (standard library only, so
``bench/run.py`` can use it under any python3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt(v: Any) -> str:
    """A cell: thousands separators for big numbers, 3 significant digits for small."""
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], left: Sequence[int] = (0,)
) -> str:
    """``rows`` under ``headers``; columns in ``left`` are left-aligned, the rest right."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(items: Sequence[str]) -> str:
        padded = [
            s.ljust(w) if i in left else s.rjust(w)
            for i, (s, w) in enumerate(zip(items, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)
