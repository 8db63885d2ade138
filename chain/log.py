"""Logging and progress: modules log through ``logging``; only the CLI decides what is shown."""

from __future__ import annotations

import logging
import sys
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


class Progress:
    """A progress bar when the CLI asked for one (a terminal), otherwise periodic log lines."""

    def __init__(self, total: int, desc: str, logger: logging.Logger | None = None, unit: str = "tile",
                 log_lines: bool = True):
        self.total, self.desc, self.n = total, desc, 0
        self.log_lines = log_lines  # False: a bar on a terminal, nothing in the logs (e.g. batches of an epoch)
        self.logger = logger or get_logger("chain.progress")
        self._bar = None
        self._next_log = 0.25
        if _state["progress"] and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self._bar is not None:
            self._bar.update(k)
        elif self.log_lines and self.total and self.n / self.total >= self._next_log:
            self.logger.info("%s: %d/%d", self.desc, self.n, self.total)
            self._next_log = self.n / self.total + 0.25

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
