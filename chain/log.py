"""Logging and progress: modules log through ``logging``; only the CLI decides what is shown."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_state = {"progress": False}
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(verbosity: int = 0, progress: bool | None = None) -> None:
    """Console logging: 0 = info, 1+ = debug, -1 = warnings only."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    root = logging.getLogger("chain")
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        if getattr(h, "_chain_console", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler._chain_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    _state["progress"] = sys.stderr.isatty() if progress is None else progress


def add_logfile(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger("chain").addHandler(handler)
    return handler


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("chain") else f"chain.{name}")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """A progress bar when the CLI asked for one (a terminal), otherwise log lines (SLURM, nohup, a log file):
    one when the work starts, then one every ``interval_s`` seconds and at each quarter, with the rate and an
    ETA, and one at the end."""

    interval_s = 30.0

    def __init__(self, total: int, desc: str, logger: logging.Logger | None = None, unit: str = "tile",
                 log_lines: bool = True):
        self.total, self.desc, self.n, self.unit = total, desc, 0, unit
        self.log_lines = log_lines  # False: a bar on a terminal, nothing in the logs (e.g. batches of an epoch)
        self.logger = logger or get_logger("chain.progress")
        self._bar = None
        self._next_share = 0.25
        self._start = self._last = time.monotonic()
        if _state["progress"] and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
        elif self.log_lines and total > 0:
            self.logger.info("%s: 0/%d %ss, started", self.desc, self.total, self.unit)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self._bar is not None:
            self._bar.update(k)
            return
        if not (self.log_lines and self.total):
            return
        now = time.monotonic()
        if self.n >= self.total or self.n / self.total >= self._next_share or now - self._last >= self.interval_s:
            elapsed = now - self._start
            rate = self.n / elapsed if elapsed > 0 else float("inf")
            eta = (self.total - self.n) / rate if self.n < self.total and rate > 0 else 0.0
            when = f"done in {_duration(elapsed)}" if self.n >= self.total else f"ETA {_duration(eta)}"
            self.logger.info("%s: %d/%d %ss (%d %%), %s/s, %s", self.desc, self.n, self.total, self.unit,
                             100 * self.n // self.total, f"{rate:.3g}" if rate < 100 else f"{rate:,.0f}", when)
            self._last = now
            self._next_share = (int(4 * self.n / self.total) + 1) / 4

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    with Progress(total, desc) as bar:
        for item in items:
            yield item
            bar.update()
