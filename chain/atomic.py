"""Atomic outputs: write to a temporary sibling, rename on success, remove on failure.

A reader never sees a half-written file, so "the file exists" means "the file is complete";
resume logic relies on this.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temp_sibling(path: Path) -> Path:
    # Same folder, so os.replace is a rename on one filesystem; keeps the suffix for GDAL drivers.
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` to; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()
        # GDAL may leave side-car files next to the temporary name (.aux.xml, .ovr)
        for side in tmp.parent.glob(tmp.name + ".*"):
            side.unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def strict(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None: JSON that strict parsers (JSON.parse, jq) accept."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def write_json(path: Path | str, obj: Any) -> None:
    """Strict JSON (NaN written as null), atomically."""
    write_text(path, json.dumps(strict(obj), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")


def clean_temporaries(folder: Path) -> int:
    """Remove temporaries left by a killed process; returns how many were removed."""
    n = 0
    if folder.exists():
        for p in folder.rglob(".*.tmp-*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    return n
