"""Sentinel-1 backscatter series: discovery, and features (dB, per orbit direction, regular dates)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from chain import gapfill
from chain.config import S1Input
from chain.errors import InputMissingError
from chain.raster import read_on_grid

log = logging.getLogger(__name__)
DATE = re.compile(r"(?<!\d)(\d{8})(?!\d)|(?<!\d)(\d{8})t\d{6}", re.IGNORECASE)
POL = re.compile(r"(?:^|[_\-.])(vv|vh)(?:[_\-.]|$)", re.IGNORECASE)
DIRECTION = re.compile(r"(?:^|[_\-.])(asc|des)(?:[_\-.]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class S1File:
    date: dt.date
    group: str  # ASC / DES (orbits separate) or ALL (merged)
    pol: str  # vv / vh
    path: str


def discover_s1(cfg: S1Input) -> list[S1File]:
    root = cfg.path
    if not root.is_dir():
        raise InputMissingError(f"inputs.s1.path: folder {str(root)!r} does not exist (expected one GeoTIFF per date and polarisation)")
    files = []
    for f in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".tif", ".tiff")):
        stem = f.stem
        d, p = re.search(r"(\d{8})", stem), POL.search(stem)
        if not d or not p:
            log.debug("S1: %s has no date or polarisation in its name; ignored", f)
            continue
        pol = p.group(1).lower()
        if pol not in cfg.polarisations:
            continue
        direction = DIRECTION.search(stem)
        group = "ALL" if cfg.orbits == "merged" else (direction.group(1).upper() if direction else "ALL")
        try:
            date = dt.datetime.strptime(d.group(1), "%Y%m%d").date()
        except ValueError:
            continue
        files.append(S1File(date, group, pol, str(f)))
    if not files:
        raise InputMissingError(
            f"inputs.s1.path: no Sentinel-1 file in {str(root)!r} with a date and a polarisation {cfg.polarisations} in its "
            "name (e.g. s1a_40KCB_vv_DES_078_20210105t023456.tif)"
        )
    for group in sorted({f.group for f in files}):
        for pol in cfg.polarisations:
            if not any(f.group == group and f.pol == pol for f in files):
                raise InputMissingError(f"inputs.s1: the {group} series has no {pol.upper()} file in {str(root)!r}; "
                                        "remove it from inputs.s1.polarisations or add the files")
    return files


def groups(files: list[S1File]) -> list[str]:
    return sorted({f.group for f in files})


def output_dates(files: list[S1File], group: str, interval_days: int) -> list[dt.date]:
    dates = sorted({f.date for f in files if f.group == group})
    return gapfill.date_grid(dates[0], dates[-1], interval_days)


def feature_names(files: list[S1File], pols: list[str], interval_days: int) -> list[str]:
    return [f"S1{'' if g == 'ALL' else '_' + g}_{p.upper()}_{d:%Y%m%d}"
            for g in groups(files) for p in pols for d in output_dates(files, g, interval_days)]


def compute(files: list[S1File], pols: list[str], interval_days: int, db: bool, nodata: float | None,
            resampling: str, grid: Any, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """S1 features (F, h, w) in the order of ``feature_names`` and the count of valid dates (h, w)."""
    h, w = int(window.height), int(window.width)
    blocks, n_valid = [], np.zeros((h, w), np.uint16)
    for g in groups(files):
        dates = sorted({f.date for f in files if f.group == g})
        values = np.zeros((len(dates), len(pols), h * w), np.float32)
        valid = np.zeros((len(dates), h * w), bool)
        for t, date in enumerate(dates):
            ok_all = np.ones(h * w, bool)
            for b, pol in enumerate(pols):
                got = np.zeros(h * w, bool)
                for f in (f for f in files if f.group == g and f.date == date and f.pol == pol):
                    arr = read_on_grid(f.path, grid, window, Resampling[resampling], nodata=nodata if nodata is not None else 0)
                    arr = arr.astype(np.float32).ravel()
                    ok = np.isfinite(arr) & (arr > 0)
                    if nodata is not None:
                        ok &= arr != nodata
                    take = ok & ~got  # two files on a date (relative orbits): first valid wins
                    values[t, b, take] = 10 * np.log10(arr[take]) if db else arr[take]
                    got |= ok
                ok_all &= got
            valid[t] = ok_all
        out_days = gapfill.to_days(output_dates(files, g, interval_days))
        filled = gapfill.linear(values, valid, gapfill.to_days(dates), out_days)  # (T_out, P, N)
        blocks.append(filled.transpose(1, 0, 2).reshape(-1, h, w))
        n_valid += valid.sum(axis=0).reshape(h, w).astype(np.uint16)
    return np.concatenate(blocks, axis=0), n_valid


def to_dicts(files: list[S1File]) -> list[dict[str, Any]]:
    return [{"date": f.date.isoformat(), "group": f.group, "pol": f.pol, "path": f.path} for f in files]


def from_dicts(items: list[dict[str, Any]]) -> list[S1File]:
    return [S1File(dt.date.fromisoformat(i["date"]), i["group"], i["pol"], i["path"]) for i in items]


def first_file(files: list[S1File]) -> Path:
    return Path(files[0].path)
