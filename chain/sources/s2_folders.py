"""Sentinel-2 as one folder per date of single-band GeoTIFFs plus a cloud mask (``inputs.s2.format: folders``).

``<path>/<...YYYYMMDD...>/<prefix>_<BAND>.tif`` for each of ``inputs.s2.bands`` and
``<prefix>_<mask_name>.tif``; any resolution and CRS (warped onto the grid). The mask's clear
values are ``inputs.s2.mask_valid_values``; the bands' no-data value is their own tag unless
``inputs.s2.nodata`` says otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

from chain.errors import ConfigError, InputError, InputMissingError
from chain.sources.base import RASTER_SUFFIXES
from chain.sources.optical import Acquisition
from chain.sources.sentinel2 import S2Input

log = logging.getLogger(__name__)


def _stem_matches(stem: str, name: str) -> bool:
    # "B8" must match "SENTINEL2_..._B8" and "B8" but not "..._B8A"
    return re.search(rf"(^|[_\-.]){re.escape(name)}$", stem, flags=re.IGNORECASE) is not None


def find_file(folder: Path, name: str) -> Path | None:
    hits = sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and _stem_matches(p.stem, name))
    if len(hits) > 1:
        raise InputError(f"{folder}: several files match {name!r}: {[h.name for h in hits]}; keep one per date")
    return hits[0] if hits else None


class DateFolders:
    name = "folders"

    def discover(self, cfg: S2Input) -> list[Acquisition]:
        root = cfg.path
        if not root.is_dir():
            raise InputMissingError(f"inputs.s2.path: folder {str(root)!r} does not exist (expected one sub-folder per date)")
        try:
            pattern = re.compile(cfg.date_regex)
        except re.error as exc:
            raise ConfigError(f"inputs.s2.date_regex {cfg.date_regex!r} is not a valid regular expression: {exc}") from None
        acquisitions: dict[dt.date, Acquisition] = {}
        incomplete: list[str] = []
        undated: list[str] = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            m = pattern.search(folder.name)
            if not m:
                if not folder.name.startswith("."):
                    undated.append(folder.name)
                continue
            raw = m.groupdict().get("date") or m.group(0)
            try:
                date = dt.datetime.strptime(raw, "%Y%m%d").date()
            except ValueError:
                raise InputError(f"{folder}: {raw!r} is not a date of the form YYYYMMDD") from None
            if date in acquisitions:
                raise InputError(f"{folder}: date {date} appears twice in {root}; keep one folder per date")
            bands: dict[str, str] = {}
            missing = []
            for band in cfg.bands:
                hit = find_file(folder, band)
                if hit is None:
                    missing.append(band)
                else:
                    bands[band] = str(hit)
            mask = find_file(folder, cfg.mask_name)
            if missing or mask is None:
                what = missing + ([f"mask '{cfg.mask_name}'"] if mask is None else [])
                incomplete.append(f"{folder.name}: {', '.join(what)}")
                continue
            acquisitions[date] = Acquisition(date, bands, str(mask))
        if undated:
            log.warning("inputs.s2.path %r: %d sub-folder(s) have no date in their name and are skipped: %s; rename them to contain "
                        "the acquisition date (YYYYMMDD) or set inputs.s2.date_regex", str(root), len(undated),
                        ", ".join(undated[:5]) + (" ..." if len(undated) > 5 else ""))
        if incomplete:  # every incomplete date at once
            raise InputMissingError(
                f"inputs.s2.path {str(root)!r}: {len(incomplete)} date folder(s) lack files: {'; '.join(incomplete[:6])}"
                f"{' ...' if len(incomplete) > 6 else ''}; expected one GeoTIFF per band named like '<prefix>_<BAND>.tif' "
                f"and a mask '<prefix>_{cfg.mask_name}.tif' (bands from inputs.s2.bands: {cfg.bands}; mask: inputs.s2.mask_name)"
            )
        if not acquisitions:
            raise InputMissingError(
                f"inputs.s2.path: no date folder in {str(root)!r} (folder names must contain a date matching {cfg.date_regex!r}, "
                "e.g. 20210105)"
            )
        return [acquisitions[d] for d in sorted(acquisitions)]

    def nodata(self, cfg: S2Input, declared: float | None) -> float | None:
        return declared

    def mask_valid_values(self, cfg: S2Input) -> tuple[int, ...]:
        return tuple(cfg.mask_valid_values)
