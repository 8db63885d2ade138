"""Features users already have (``inputs.stack``): one multi-band raster, a folder of them, or a list.

Bands are named by ``inputs.stack.bands``, else by the files' band descriptions, else ``b1..bn``
(prefixed by the file's stem when there are several files). A pixel with no data in any band of a
file has no features from it.

A stack whose bands are dates (an NDVI series, one band per acquisition) is a time series: dated by
``inputs.stack.dates`` or by band descriptions holding a date (``20210105``, ``2021-01-05``), it is
gap-filled onto the ``gapfill:`` date grid like any series, cloudy (no-data) dates included: one
variable per file, named by the file's stem, every file on the same dates.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from chain.errors import ConfigError, InputError, InputMissingError
from chain.schema import PathFromConfig, ResamplingName, Section
from chain.sources.base import RASTER_SUFFIXES, Header, Source, SourceBlock, read_header
from chain.spec import FeatureGroup, series_group

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.config import Config
    from chain.grid import GridSpec

log = logging.getLogger(__name__)
LABEL = "STACK"


def _date_in(text: str | None) -> dt.date | None:
    """The date a band description holds (``20210105``, ``2021-01-05``, ``NDVI_20210105``), or None."""
    m = re.search(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)", text or "")
    if not m:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


class StackInput(Section):
    """Features users already have: one multi-band raster, or several (e.g. one per date)."""

    path: PathFromConfig | list[PathFromConfig]  # a file, a folder of .tif/.vrt, or a list of files
    bands: list[str] | None = None  # band names of each file; default: the band descriptions, else b1..bn
    # the acquisition date of each band: the stack is a time series (gap-filled); default: dates found in
    # the band descriptions, else none (plain features)
    dates: list[dt.date] | None = None
    nodata: float | None = None  # default: the files' own nodata
    resampling: ResamplingName = "nearest"


@dataclass(frozen=True)
class StackFile:
    path: str
    names: tuple[str, ...]  # feature name of each band


@dataclass(frozen=True)
class FeatureStack(Source):
    stack: tuple[StackFile, ...]
    nodata: float | None
    resampling: str
    dates: tuple[dt.date, ...] = ()  # a time series: the date of each band (every file); () plain features

    name: ClassVar[str] = "stack"
    title: ClassVar[str] = "feature stack"
    config: ClassVar[type[Section]] = StackInput
    feature_rank: ClassVar[int] = 90
    grid_rank: ClassVar[int] = 20

    @classmethod
    def discover(cls, section: Any, cfg: Config) -> FeatureStack:
        import rasterio

        sc: StackInput = section
        paths = sc.path if isinstance(sc.path, list) else [sc.path]
        files: list[Path] = []
        for p in paths:
            if p.is_dir():
                found = sorted(q for q in p.iterdir() if q.suffix.lower() in RASTER_SUFFIXES)
                if not found:
                    raise InputMissingError(f"inputs.stack.path: folder {str(p)!r} holds no .tif/.vrt file")
                files += found
            elif p.exists():
                files.append(p)
            else:
                raise InputMissingError(f"inputs.stack.path: {str(p)!r} does not exist (expected a multi-band GeoTIFF, a folder of them, or a list)")
        out: list[StackFile] = []
        first: Header | None = None
        dated: list[tuple[dt.date, ...] | None] = []
        for f in files:
            h = read_header(str(f))
            first = first or h
            with rasterio.open(f) as src:
                descriptions = list(src.descriptions)
            if sc.dates is not None:
                if len(sc.dates) != h.count:
                    raise InputError(f"{f}: has {h.count} band(s) but inputs.stack.dates gives {len(sc.dates)} date(s); "
                                     "give one date per band")
                dated.append(tuple(sc.dates))
            else:
                # a series only when each band is its own date: "B2_20210318", "B4_20210318"... are plain features
                in_names = [_date_in(d) for d in descriptions]
                days = [d for d in in_names if d is not None]
                series = len(days) == len(in_names) and all(a < b for a, b in zip(days, days[1:], strict=False))
                dated.append(tuple(days) if series else None)
            if dated[-1] is not None:
                out.append(StackFile(str(f), (f.stem,)))
                continue
            if sc.bands is not None:
                if len(sc.bands) != h.count:
                    raise InputError(f"{f}: has {h.count} band(s) but inputs.stack.bands names {len(sc.bands)}; give one name per band")
                names = list(sc.bands)
            elif all(descriptions) and len(set(descriptions)) == len(descriptions):
                names = [str(d) for d in descriptions]
            else:
                names = [f"b{i}" for i in range(1, h.count + 1)]
            if len(files) > 1:
                names = [f"{f.stem}_{n}" for n in names]
            out.append(StackFile(str(f), tuple(names)))
        assert first is not None
        nodata = sc.nodata if sc.nodata is not None else first.nodata
        if any(d is not None for d in dated):
            return cls._series(files, out, dated, nodata, sc.resampling)
        all_names = [n for f in out for n in f.names]
        dup = sorted({n for n in all_names if all_names.count(n) > 1})
        if dup:
            raise InputError(f"inputs.stack: feature names {dup[:5]} appear more than once; name the bands uniquely "
                             "(inputs.stack.bands or band descriptions)")
        stack = cls(tuple(out), nodata, sc.resampling)
        stack._warn_gaps()
        return stack

    @classmethod
    def _series(cls, files: list[Path], out: list[StackFile], dated: list[tuple[dt.date, ...] | None], nodata: float | None,
                resampling: str) -> FeatureStack:
        undated = [str(f) for f, d in zip(files, dated, strict=True) if d is None]
        if undated:
            raise InputError(f"inputs.stack: some files have dated bands and {len(undated)} do not (e.g. {undated[0]}); "
                             "a stack is either a time series (every band dated) or plain features")
        first = dated[0]
        assert first is not None
        if any(d != first for d in dated):
            raise InputError("inputs.stack: the dated files do not share the same dates; give one series per file on the "
                             "same dates (or one file)")
        if len(set(first)) != len(first) or list(first) != sorted(first):
            raise InputError(f"inputs.stack: the band dates must increase without repeats, got {[d.isoformat() for d in first][:6]}...")
        names = [f.names[0] for f in out]
        if len(set(names)) != len(names):
            raise InputError(f"inputs.stack: two dated files share the stem {names}; each file is one variable named by its stem")
        if nodata is None:
            log.warning("inputs.stack: the dated stack has no no-data value (file tag or inputs.stack.nodata): every value, "
                        "cloudy dates included, is used as a measurement; set inputs.stack.nodata (e.g. -9999)")
        return cls(tuple(out), nodata, resampling, tuple(first))

    def _warn_gaps(self) -> None:
        """Plain features drop a pixel with no data in any band: say how many go (from a decimated read), and
        point at ``dates`` when the bands might be dates."""
        import rasterio

        for f in self.stack:
            with rasterio.open(f.path) as src:
                h, w = min(src.height, 128), min(src.width, 128)
                arr = src.read(out_shape=(src.count, h, w), resampling=rasterio.enums.Resampling.nearest).astype("float64")
            ok = np.isfinite(arr)
            if self.nodata is not None:
                ok &= arr != self.nodata
            some = ok.any(axis=0)
            dropped = float((some & ~ok.all(axis=0)).sum() / max(some.sum(), 1))
            if dropped >= 0.999:
                raise InputError(
                    f"inputs.stack: in {f.path}, every pixel has no data ({self.nodata}) in at least one of its {len(f.names)} "
                    "bands, so none could be mapped; if the bands are dates (a cloudy series), give inputs.stack.dates "
                    "(or band descriptions YYYYMMDD) to gap-fill them")
            if dropped > 0.01:
                log.warning("inputs.stack: about %.0f %% of the pixels of %s have no data in at least one band and will not be "
                            "mapped; if the bands are dates, give inputs.stack.dates (or band descriptions YYYYMMDD) to gap-fill "
                            "them", 100 * dropped, f.path)

    def files(self) -> list[str]:
        return [f.path for f in self.stack]

    def grid_headers(self) -> list[Header]:
        return [read_header(self.stack[0].path)]

    def summary(self) -> str:
        if self.dates:
            return (f"{len(self.stack)} dated file(s) ({', '.join(f.names[0] for f in self.stack)}), {len(self.dates)} dates "
                    f"{self.dates[0]} .. {self.dates[-1]}")
        return f"{len(self.stack)} file(s), {sum(len(f.names) for f in self.stack)} band(s)"

    def to_dict(self) -> dict[str, Any]:
        d = {"stack": [{"path": f.path, "names": list(f.names)} for f in self.stack], "nodata": self.nodata,
             "resampling": self.resampling}
        return {**d, "dates": [x.isoformat() for x in self.dates]} if self.dates else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureStack:
        return cls(tuple(StackFile(f["path"], tuple(f["names"])) for f in d["stack"]), d["nodata"], d["resampling"],
                   tuple(dt.date.fromisoformat(x) for x in d.get("dates", ())))

    def date_grids(self, cfg: Config) -> dict[str, list[dt.date]]:
        if not self.dates:
            return {}
        from chain.sources.optical import output_dates

        return {LABEL: output_dates(cfg, list(self.dates), self.title)}

    def groups(self, dates: dict[str, Any], cfg: Config) -> list[FeatureGroup]:
        if self.dates:
            if LABEL not in dates:
                raise ConfigError("inputs.stack: the dated stack has no output dates; run the gapfill step again")
            return [series_group(self.name, LABEL, [f.names[0] for f in self.stack], list(dates[LABEL]))]
        return [FeatureGroup(self.name, LABEL, tuple(n for f in self.stack for n in f.names))]

    def read_files(self, grid: GridSpec, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The bands (F, h, w) float32 and, per file, validity (files, h, w)."""
        from rasterio.enums import Resampling

        from chain.masks import finite_everywhere
        from chain.raster import pixel_major, read_on_grid

        parts, valid = [], []
        for f in self.stack:
            arr = read_on_grid(f.path, grid, window, Resampling[self.resampling], nodata=self.nodata,
                               band=list(range(1, len(f.names) + 1))).astype(np.float32, copy=False)
            parts.append(arr)
            valid.append(finite_everywhere(arr, None if self.nodata is None else float(np.float32(self.nodata))))
        if len(parts) == 1:
            return parts[0], np.stack(valid)
        if all(pixel_major(p) is not None for p in parts):  # keep the pixel-major layout (see raster.read_window)
            return np.concatenate([p.transpose(1, 2, 0) for p in parts], axis=2).transpose(2, 0, 1), np.stack(valid)
        return np.concatenate(parts, axis=0), np.stack(valid)

    def read(self, grid: GridSpec, window: Window, groups: list[FeatureGroup], method: str) -> SourceBlock:
        if self.dates:
            return self._read_series(grid, window, groups[0], method)
        values, ok = self.read_files(grid, window)
        everywhere = ok.all(axis=0)
        if not everywhere.all():
            values[:, ~everywhere] = np.nan
        count = ok.sum(axis=0).astype(np.uint16)
        return SourceBlock(values, count, {"feature stack valid files": count}, usable=np.asarray(everywhere))

    def _read_series(self, grid: GridSpec, window: Window, group: FeatureGroup, method: str) -> SourceBlock:
        """Each file a variable over the dates: a date is clear where every variable has a value; gap-filled."""
        from rasterio.enums import Resampling

        from chain import gapfill
        from chain.raster import read_on_grid

        T = len(self.dates)
        raw = np.stack([read_on_grid(f.path, grid, window, Resampling[self.resampling], nodata=self.nodata,
                                     band=list(range(1, T + 1))).astype(np.float32, copy=False) for f in self.stack], axis=1)
        valid = np.isfinite(raw).all(axis=1)  # (T, h, w)
        if self.nodata is not None:
            valid &= (raw != np.float32(self.nodata)).all(axis=1)
        _, C, h, w = raw.shape
        filled = gapfill.fill(raw.reshape(T, C, h * w), valid.reshape(T, h * w), list(self.dates), list(group.dates), method)
        values = filled.transpose(1, 0, 2).reshape(-1, h, w)  # band-major, as series_group names them
        count = valid.sum(axis=0).astype(np.uint16)
        return SourceBlock(np.ascontiguousarray(values, dtype=np.float32), count, {"feature stack clear dates": count})
