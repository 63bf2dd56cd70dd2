"""Running passes: in sequence, or repeated to a fixed point, with the verifier between them on request."""
from __future__ import annotations

import logging
import os
from typing import Callable

from tflq.ir.graph import Graph

log = logging.getLogger(__name__)
Pass = Callable[[Graph], int]


def _verify_if_debugging(graph: Graph, name: str) -> None:
    if os.environ.get("TFLQ_DEBUG") == "1":
        from tflq.ir.verify import verify

        verify(graph, after=name)


def run_passes(graph: Graph, passes: list[Pass]) -> dict[str, int]:
    """Run each pass once, in order; return rewrites per pass name."""
    counts: dict[str, int] = {}
    for p in passes:
        counts[p.__name__] = counts.get(p.__name__, 0) + p(graph)
        log.debug("%s: %d rewrites", p.__name__, counts[p.__name__])
        _verify_if_debugging(graph, p.__name__)
    return counts


def fixed_point(graph: Graph, passes: list[Pass], max_iter: int = 8) -> dict[str, int]:
    """Repeat the passes until none rewrites anything (at most `max_iter` rounds)."""
    totals: dict[str, int] = {}
    for _ in range(max_iter):
        counts = run_passes(graph, passes)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        if not any(counts.values()):
            break
    return totals
