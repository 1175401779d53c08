"""Progress on stderr for commands that run longer than a second (tqdm).

Bars appear only on a terminal (off when stderr is not a TTY, e.g. in CI or a pipe, and with
``--quiet``), and only after one second, so quick commands print nothing extra.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tqdm is imported when a bar is made
    from tqdm import tqdm

DELAY = 1.0  # seconds before a bar appears


def enabled(quiet: bool = False) -> bool:
    """Whether to draw progress: not ``quiet`` and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


def bar(total: float | None = None, quiet: bool = False, **kw: Any) -> tqdm:
    """A tqdm bar on stderr, shown after ``DELAY`` seconds and only when ``enabled(quiet)``
    (every progress bar of looptune is made here, so none is drawn into a file or a pipe)."""
    from tqdm import tqdm

    kw.setdefault("delay", DELAY)
    kw.setdefault("leave", False)
    return tqdm(total=total, disable=not enabled(quiet), file=sys.stderr, **kw)


@contextmanager
def search_progress(
    name: str, measurer: Any, time_budget: float | None, quiet: bool = False
) -> Iterator[None]:
    """While a search runs: elapsed time against its budget and the fresh measurements so far
    (read from ``measurer.stats``), refreshed by a background thread five times a second."""
    if not enabled(quiet):
        yield
        return
    total = time_budget if time_budget and time_budget > 0 else None
    fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} s{postfix}" if total else None
    pbar = bar(total, desc=name, unit="s", **({"bar_format": fmt} if fmt else {}))
    stop = threading.Event()
    start = time.perf_counter()

    def tick() -> None:
        while not stop.wait(0.2):
            elapsed = time.perf_counter() - start
            pbar.n = min(elapsed, total) if total else elapsed
            pbar.set_postfix_str(f"{measurer.stats.measured} measured", refresh=False)
            if elapsed >= DELAY:  # refresh() would bypass tqdm's delay
                pbar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        pbar.close()
