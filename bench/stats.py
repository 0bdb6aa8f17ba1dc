"""Small statistics helpers: every figure is reported with its spread."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """min / median / p99 / max, in ms by default."""
    return {"n": len(values), "min": min(values) * scale, "median": statistics.median(values) * scale,
            "p99": pct(values, 99) * scale, "max": max(values) * scale}


def fmt(s: dict[str, float], unit: str = "ms") -> str:
    return (f"median {s['median']:.2f} {unit}, p99 {s['p99']:.2f} {unit} "
            f"(min {s['min']:.2f}, max {s['max']:.2f}, n={int(s['n'])})")
