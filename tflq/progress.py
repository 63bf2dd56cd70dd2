"""Progress bars: tqdm on stderr, silent when asked, when stderr is no terminal, or for tiny jobs."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

MIN_STEPS_FOR_A_BAR = 8


class _HiddenBar(tqdm):
    """A bar that is not shown: tqdm starts its monitor thread for every bar, shown or not,
    unless the class says not to (a conversion with no bar leaves no thread behind)."""

    monitor_interval = 0


@contextmanager
def progress(total: int | None, description: str, enabled: bool = True,
             unit: str = "sample") -> Iterator[tqdm]:
    show = enabled and sys.stderr.isatty() and (total is None or total >= MIN_STEPS_FOR_A_BAR)
    bar = (tqdm if show else _HiddenBar)(total=total, desc=description, file=sys.stderr,
                                         disable=not show, leave=False, unit=unit,
                                         dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
