"""Sentinel-1 backscatter series (``inputs.s1``): one GeoTIFF per date and polarisation (linear sigma0).

File names need the date (YYYYMMDD) and the polarisation (vv/vh) between separators and may give the
orbit direction (ASC/DES), as S1Tiling's ``s1a_33NWB_vv_DES_007_20200108t054435.tif`` do. With
``orbits: separate`` ascending and descending acquisitions form two series (their geometry differs),
each gap-filled onto its own regular date grid (from its first date, every ``interval_days``).
Backscatter is converted to dB; a value that is nodata, <= 0 or outside the footprint is invalid and
gap-filled like a cloud in S2; two files of one date and direction (two relative orbits) are merged,
the first valid winning.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from chain.errors import InputMissingError
from chain.schema import PathFromConfig, ResamplingName, Section
from chain.sources.base import Header, Source, SourceBlock, read_header
from chain.spec import FeatureGroup, series_group

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.config import Config
    from chain.grid import GridSpec

log = logging.getLogger(__name__)
POL = re.compile(r"(?:^|[_\-.])(vv|vh)(?:[_\-.]|$)", re.IGNORECASE)
DIRECTION = re.compile(r"(?:^|[_\-.])(asc|des)(?:[_\-.]|$)", re.IGNORECASE)


class S1Input(Section):
    """Calibrated, orthorectified Sentinel-1 backscatter: one GeoTIFF per date and polarisation (linear sigma0)."""

    path: PathFromConfig
    polarisations: list[Literal["vv", "vh"]] = Field(default_factory=lambda: ["vv", "vh"], min_length=1)  # type: ignore[arg-type]
    orbits: Literal["separate", "merged"] = "separate"  # ascending and descending as separate series, or one
    db: bool = True  # convert linear sigma0 to decibels
    nodata: float | None = None  # default: the files' nodata; values <= 0 are invalid anyway
    interval_days: int = Field(12, ge=1, le=366)  # S1's own regular date grid
    resampling: ResamplingName = "bilinear"


@dataclass(frozen=True)
class S1File:
    date: dt.date
    group: str  # ASC / DES (orbits separate) or ALL (merged)
    pol: str  # vv / vh
    path: str


@dataclass(frozen=True)
class Sentinel1(Source):
    files_: tuple[S1File, ...]
    polarisations: tuple[str, ...]
    interval_days: int
    db: bool
    nodata: float | None
    resampling: str

    name: ClassVar[str] = "s1"
    title: ClassVar[str] = "Sentinel-1"
    config: ClassVar[type[Section]] = S1Input
    feature_rank: ClassVar[int] = 30
    grid_rank: ClassVar[int] = 30

    @classmethod
    def discover(cls, section: Any, cfg: Config) -> Sentinel1:
        s1: S1Input = section
        root = s1.path
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
            if pol not in s1.polarisations:
                continue
            direction = DIRECTION.search(stem)
            group = "ALL" if s1.orbits == "merged" else (direction.group(1).upper() if direction else "ALL")
            try:
                date = dt.datetime.strptime(d.group(1), "%Y%m%d").date()
            except ValueError:
                continue
            files.append(S1File(date, group, pol, str(f)))
        if not files:
            raise InputMissingError(
                f"inputs.s1.path: no Sentinel-1 file in {str(root)!r} with a date and a polarisation {s1.polarisations} in its "
                "name (e.g. s1a_40KCB_vv_DES_078_20210105t023456.tif)"
            )
        for group in sorted({f.group for f in files}):
            for pol in s1.polarisations:
                if not any(f.group == group and f.pol == pol for f in files):
                    raise InputMissingError(f"inputs.s1: the {group} series has no {pol.upper()} file in {str(root)!r}; "
                                            "remove it from inputs.s1.polarisations or add the files")
        for s1file in files:
            read_header(s1file.path)
        return cls(tuple(files), tuple(s1.polarisations), s1.interval_days, s1.db, s1.nodata, s1.resampling)

    def files(self) -> list[str]:
        return [f.path for f in self.files_]

    def grid_headers(self) -> list[Header]:
        return [read_header(self.files_[0].path)]

    def summary(self) -> str:
        return (f"{len(self.files_)} files, {len({f.date for f in self.files_})} dates, "
                f"{' '.join(sorted({f.group + '/' + f.pol for f in self.files_}))}")

    def to_dict(self) -> dict[str, Any]:
        return {"files": [{"date": f.date.isoformat(), "group": f.group, "pol": f.pol, "path": f.path} for f in self.files_],
                "polarisations": list(self.polarisations), "interval_days": self.interval_days, "db": self.db,
                "nodata": self.nodata, "resampling": self.resampling}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sentinel1:
        files = tuple(S1File(dt.date.fromisoformat(i["date"]), i["group"], i["pol"], i["path"]) for i in d["files"])
        return cls(files, tuple(d["polarisations"]), int(d["interval_days"]), bool(d["db"]), d["nodata"], d["resampling"])

    # ---- features ----------------------------------------------------------------------------------

    def orbit_groups(self) -> list[str]:
        return sorted({f.group for f in self.files_})

    @staticmethod
    def label(group: str) -> str:
        return "S1" if group == "ALL" else f"S1_{group}"

    def dates_of(self, group: str) -> list[dt.date]:
        return sorted({f.date for f in self.files_ if f.group == group})

    def date_grids(self, cfg: Config) -> dict[str, list[dt.date]]:
        from chain.gapfill import date_grid

        out = {}
        for g in self.orbit_groups():
            dates = self.dates_of(g)
            out[self.label(g)] = date_grid(dates[0], dates[-1], self.interval_days)
        return out

    def groups(self, dates: dict[str, list[dt.date]], cfg: Config) -> list[FeatureGroup]:
        pols = [p.upper() for p in self.polarisations]
        return [series_group(self.name, self.label(g), pols, dates[self.label(g)], f"{self.label(g)}_") for g in self.orbit_groups()]

    def read(self, grid: GridSpec, window: Window, groups: list[FeatureGroup], method: str) -> SourceBlock:
        """Backscatter (dB) of every group, gap-filled by ``method``, and the count of valid dates (h, w)."""
        from rasterio.enums import Resampling

        from chain import gapfill
        from chain.raster import read_on_grid

        h, w = int(window.height), int(window.width)
        blocks, n_valid = [], np.zeros((h, w), np.uint16)
        by_label = {g.label: g for g in groups}
        for g in self.orbit_groups():
            dates = self.dates_of(g)
            values = np.zeros((len(dates), len(self.polarisations), h * w), np.float32)
            valid = np.zeros((len(dates), h * w), bool)
            for t, date in enumerate(dates):
                ok_all = np.ones(h * w, bool)
                for b, pol in enumerate(self.polarisations):
                    got = np.zeros(h * w, bool)
                    for f in (f for f in self.files_ if f.group == g and f.date == date and f.pol == pol):
                        arr = read_on_grid(f.path, grid, window, Resampling[self.resampling],
                                           nodata=self.nodata if self.nodata is not None else 0)
                        arr = arr.astype(np.float32).ravel()
                        ok = np.isfinite(arr) & (arr > 0)
                        if self.nodata is not None:
                            ok &= arr != self.nodata
                        take = ok & ~got  # two files on a date (relative orbits): first valid wins
                        values[t, b, take] = 10 * np.log10(arr[take]) if self.db else arr[take]
                        got |= ok
                    ok_all &= got
                valid[t] = ok_all
            filled = gapfill.fill(values, valid, dates, list(by_label[self.label(g)].dates), method)  # (T_out, P, N)
            blocks.append(filled.transpose(1, 0, 2).reshape(-1, h, w))
            n_valid += valid.sum(axis=0).reshape(h, w).astype(np.uint16)
        return SourceBlock(np.concatenate(blocks, axis=0), n_valid, {"S1 valid dates": n_valid.astype(np.uint16)})

    @classmethod
    def series_index(cls, groups: list[tuple[int, FeatureGroup]]) -> tuple[tuple[int, ...], int]:
        """One channel per orbit direction and polarisation, time-major.

        The directions have their own date grids; their series are aligned by rank and cut to the
        shortest (they differ by at most a date or two over a season). Channels are ordered by name
        (S1_ASC_VH, S1_ASC_VV, S1_DES_VH, ...).
        """
        channels: dict[str, list[int]] = {}
        for offset, g in groups:
            for c, idx in zip(g.channels, g.time_major(offset), strict=True):
                channels[f"{g.label}_{c}"] = idx
        if not channels:
            from chain.errors import ConfigError

            raise ConfigError("this model needs the Sentinel-1 series: add inputs.s1")
        T = min(len(v) for v in channels.values())
        keys = sorted(channels)
        return tuple(channels[k][t] for t in range(T) for k in keys), T
