"""Optical reflectance series (Sentinel-2, Landsat): products per date, cloud masks, gap-filling, indices.

What S2 and Landsat share once discovery has found their files: an ``Acquisition`` per product
(bands, a cloud mask and optional extra masks), read onto the grid window by window; several
products on one date (neighbouring tiles, orbits) are merged, the first valid product winning at
each pixel; the series is gap-filled onto a regular date grid (``gapfill:``) and spectral indices
are computed from the bands' common names (red, nir, swir1...), so an index means the same thing
whatever the sensor's band numbering.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from chain import scratch
from chain.errors import ConfigError, InputError
from chain.sources.base import Header, Source, SourceBlock, read_header
from chain.spec import FeatureGroup, series_group

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.config import Config
    from chain.grid import GridSpec

log = logging.getLogger(__name__)


def check_headers(what: str, key: str, acquisitions: list[Acquisition] | tuple[Acquisition, ...],
                  headers: dict[str, Header], nodata_given: bool) -> None:
    """What can be known from the headers before any pixel is read: one data type family across the series,
    masks covering their bands, and a warning (with counts) when the bands carry no no-data tag."""
    from chain.errors import Problems

    problems: list[InputError] = []
    band_files = [p for a in acquisitions for p in a.bands.values()]
    floats = sorted(p for p in band_files if headers[p].dtype.startswith("float"))
    if floats and len(floats) < len(band_files):
        ints = len(band_files) - len(floats)
        problems.append(InputError(
            f"{what}: {len(floats)} band file(s) are floating point ({headers[floats[0]].dtype}, e.g. {floats[0]!r}) while {ints} are "
            f"integers: one {key}.scale cannot suit both (float files are often already reflectances); convert them to one data "
            "type, e.g. gdal_translate -ot Int16 -scale 0 1 0 10000"))
    bad_masks = []
    for a in acquisitions:
        band = headers[next(iter(a.bands.values()))]
        for m in (a.mask, *a.extra_masks):
            mh = headers[m]
            if mh.crs == band.crs and not _covers(mh.bounds, band.bounds, abs(band.transform.a)):
                bad_masks.append(f"{m} ({mh.width} x {mh.height} px, bands {band.width} x {band.height} px)")
    if bad_masks:
        problems.append(InputError(
            f"{what}: {len(bad_masks)} mask(s) do not cover the area of their bands: {'; '.join(bad_masks[:3])}"
            f"{' ...' if len(bad_masks) > 3 else ''}; each date's mask must be the mask of that product (same footprint)"))
    if not nodata_given:
        untagged = [p for p in band_files if headers[p].nodata is None]
        if untagged:
            log.warning("%s: %d of %d band file(s) have no no-data tag (e.g. %s) and %s.nodata is not set: every value is read as "
                        "a measurement, so fill values (e.g. -10000 or 0 outside the swath) would be used as data; set %s.nodata "
                        "to the products' fill value, or tag the files (gdal_edit.py -a_nodata)", what, len(untagged), len(band_files),
                        untagged[0], key, key)
    Problems.collect(problems)  # type: ignore[arg-type]


def check_scale(what: str, key: str, path: str, nodata: float | None, scale: float, offset: float) -> None:
    """A warning when the scaled values of a sample of ``path`` cannot be reflectances: e.g. float files already
    in reflectance (or NDVI) read with the default scale 0.0001 would all become ~0."""
    import rasterio

    with rasterio.open(path) as src:  # a decimated read: a few thousand values, cheap on any file
        h, w = min(src.height, 64), min(src.width, 64)
        sample = src.read(1, out_shape=(h, w), masked=True).astype("float64")
    values = sample.compressed()
    if nodata is not None:
        values = values[values != nodata]
    if values.size == 0:
        return
    p99 = float(np.percentile(np.abs(values * scale + offset), 99))
    raw99 = float(np.percentile(np.abs(values), 99))
    if p99 < 0.01 and raw99 <= 2:
        log.warning("%s: values of %s are already small (99th percentile %.3g) and %s.scale %g makes them %.2g: they look "
                    "like reflectances or an index already; set %s.scale: 1", what, path, raw99, key, scale, p99, key)
    elif p99 > 20:
        log.warning("%s: values of %s times %s.scale %g reach %.3g, far above reflectances (0..1): check %s.scale", what, path,
                    key, scale, p99, key)



def _covers(outer: tuple[float, float, float, float], inner: tuple[float, float, float, float], tol: float) -> bool:
    return (outer[0] <= inner[0] + tol and outer[1] <= inner[1] + tol and outer[2] >= inner[2] - tol
            and outer[3] >= inner[3] - tol)


def _contiguous(*arrays: np.ndarray) -> bool:
    return all(v.flags.c_contiguous and v.shape == arrays[0].shape for v in arrays)


def _normalized_difference(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """(a - b) / (a + b) in float32 into ``out`` (the stack's plane), 0 where a + b is 0 (NaN stays NaN)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if _nd_kernel is not None and _contiguous(a, b, out):
        _nd_kernel(a.ravel(), b.ravel(), out.ravel())  # one pass, no temporaries: the same float32 operations
        return
    s = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out[...] = np.where(s != 0, (a - b) / s, 0.0).astype(np.float32)


def _brightness(bands: dict[str, np.ndarray], out: np.ndarray) -> None:
    """sqrt of the sum of the squared bands (float32, summed in the bands' order) into ``out``."""
    arrays = [np.asarray(v, np.float32) for v in bands.values()]
    if _sq_kernel is not None and _contiguous(out, *arrays):
        out.fill(0)
        for v in arrays:
            _sq_kernel(v.ravel(), out.ravel())
        np.sqrt(out, out=out)
        return
    out[...] = np.sqrt(sum(v * v for v in arrays)).astype(np.float32)


try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency
    njit = None  # type: ignore[assignment]
_nd_kernel = _sq_kernel = None
if njit is not None:

    @njit(cache=True, nogil=True)
    def _nd_kernel(a, b, out):  # type: ignore[no-untyped-def]
        zero = np.float32(0.0)
        for i in range(a.shape[0]):
            s = a[i] + b[i]
            out[i] = (a[i] - b[i]) / s if s != zero else zero

    @njit(cache=True, nogil=True)
    def _sq_kernel(v, acc):  # type: ignore[no-untyped-def]
        for i in range(v.shape[0]):
            acc[i] += v[i] * v[i]


# name -> (common band names it needs, None = every band; function of ({common name or band: reflectance}, the stack's
# plane it writes): written in place, as the gap-filled bands are, with no plane-sized temporary to copy
INDICES: dict[str, tuple[tuple[str, ...] | None, Callable[[dict[str, np.ndarray], np.ndarray], None]]] = {
    "ndvi": (("nir", "red"), lambda b, out: _normalized_difference(b["nir"], b["red"], out)),
    # Gao's NDWI (NIR vs SWIR at 1.6 um), sensitive to vegetation water content, as in iota2's default features
    "ndwi": (("nir", "swir1"), lambda b, out: _normalized_difference(b["nir"], b["swir1"], out)),
    "brightness": (None, _brightness),
}


@dataclass(frozen=True)
class Acquisition:
    date: dt.date
    bands: dict[str, str]  # band name -> file path (or a GDAL /vsizip/ path)
    mask: str  # the cloud mask (see OpticalSeries: valid values, or invalid bits)
    extra_masks: tuple[str, ...] = ()  # e.g. THEIA edge and saturation masks: any non-zero value is invalid
    offsets: dict[str, float] = field(default_factory=dict)  # per-band reflectance offset of this product (Sen2Cor)

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), "bands": self.bands, "mask": self.mask, "extra_masks": list(self.extra_masks),
                "offsets": self.offsets}

    @classmethod
    def from_dict(cls, a: dict[str, Any]) -> Acquisition:
        return cls(dt.date.fromisoformat(a["date"]), dict(a["bands"]), a["mask"], tuple(a.get("extra_masks", ())),
                   dict(a.get("offsets", {})))


def within_range(cfg: Config, acquisitions: list[Acquisition], what: str) -> list[Acquisition]:
    """Drop (with a warning) products far outside gapfill.start/end: one interval beyond is kept for interpolation."""
    g = cfg.gapfill
    lo = g.start - dt.timedelta(days=g.interval_days) if g.start else None
    hi = g.end + dt.timedelta(days=g.interval_days) if g.end else None
    kept = [a for a in acquisitions if (lo is None or a.date >= lo) and (hi is None or a.date <= hi)]
    skipped = sorted({a.date for a in acquisitions} - {a.date for a in kept})
    if not kept:
        raise ConfigError(
            f"no {what} acquisition between gapfill.start ({g.start}) and gapfill.end ({g.end}): the products span "
            f"{acquisitions[0].date} .. {acquisitions[-1].date}; set the dates inside that range or leave them out"
        )
    if skipped:
        log.warning("%s: %d acquisition date(s) outside gapfill.start/end (%s .. %s, +- %d days) skipped: %s", what,
                    len(skipped), g.start, g.end, g.interval_days, ", ".join(map(str, skipped[:8])) + (" ..." if len(skipped) > 8 else ""))
    return kept


def output_dates(cfg: Config, dates: list[dt.date], what: str) -> list[dt.date]:
    """The regular date grid of ``gapfill:``; raises ConfigError when it does not overlap the acquisitions."""
    from chain.gapfill import date_grid

    first, last = dates[0], dates[-1]
    start = cfg.gapfill.start or first
    end = cfg.gapfill.end or last
    if start > last or end < first:
        raise ConfigError(
            f"gapfill dates {start}..{end} do not overlap the {what} acquisitions ({first}..{last}, {len(dates)} dates); "
            "set gapfill.start/end inside that range or leave them out to use it"
        )
    return date_grid(start, end, cfg.gapfill.interval_days)


@dataclass(frozen=True)
class OpticalSeries(Source):
    """A reflectance series: what S2 and Landsat discovery produce (their format constants are in the fields)."""

    bands: tuple[str, ...]
    acquisitions: tuple[Acquisition, ...]
    common: tuple[tuple[str, str], ...]  # (band, common name) of the sensor's bands, for the indices: red, nir, swir1, ...
    nodata: float | None
    scale: float
    offset: float
    saturation: float | None
    mask_valid_values: tuple[int, ...]  # mask values meaning "clear" (when mask_invalid_bits is 0)
    resampling: str
    mask_invalid_bits: int = 0  # a bit-field mask: a pixel is invalid when any of these bits is set

    prefix: ClassVar[str] = ""  # feature names: <prefix><band or INDEX>_<YYYYMMDD>
    label: ClassVar[str] = "S2"
    clear_band: ClassVar[str] = "S2 clear dates"  # the PixelsValidity band
    temporal: ClassVar[bool] = True

    @property
    def dates(self) -> list[dt.date]:
        """Acquisition dates, each once (several products on a date are merged when read)."""
        return sorted({a.date for a in self.acquisitions})

    # ---- catalogue ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["acquisitions"] = [a.to_dict() for a in self.acquisitions]
        d["bands"], d["common"], d["mask_valid_values"] = list(self.bands), [list(c) for c in self.common], list(self.mask_valid_values)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpticalSeries:
        kw = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        kw["acquisitions"] = tuple(Acquisition.from_dict(a) for a in d["acquisitions"])
        kw["bands"], kw["mask_valid_values"] = tuple(d["bands"]), tuple(d["mask_valid_values"])
        kw["common"] = tuple((b, c) for b, c in d["common"])
        return cls(**kw)

    def files(self) -> list[str]:
        return [p for a in self.acquisitions for p in [*a.bands.values(), a.mask, *a.extra_masks]]

    def grid_headers(self) -> list[Header]:
        return [read_header(a.bands[self.bands[0]]) for a in self.acquisitions]

    def check_area(self, grid: GridSpec) -> None:
        """A product that does not touch the grid's area is another tile's: refuse it by name."""
        from rasterio.warp import transform_bounds

        from chain.fingerprint import real_file

        gl, gb, gr, gt = grid.bounds
        for acq, h in zip(self.acquisitions, self.grid_headers(), strict=True):
            b = h.bounds if h.crs == grid.crs else transform_bounds(h.crs, grid.crs, *h.bounds)
            if b[0] >= gr or b[2] <= gl or b[1] >= gt or b[3] <= gb:
                raise InputError(
                    f"{real_file(h.path)}: this product ({acq.date}) lies outside the area mapped "
                    f"(grid bounds {tuple(round(v) for v in grid.bounds)}); it belongs to another tile: remove it from "
                    f"inputs.{self.name}.path or widen grid.bounds / grid.aoi"
                )

    def summary(self) -> str:
        d = self.dates
        return f"{len(d)} dates ({len(self.acquisitions)} products) {d[0]} .. {d[-1]}, bands {' '.join(self.bands)}"

    # ---- features ----------------------------------------------------------------------------------

    def date_grids(self, cfg: Config) -> dict[str, list[dt.date]]:
        return {self.label: output_dates(cfg, self.dates, self.title)}

    def groups(self, dates: dict[str, list[dt.date]], cfg: Config) -> list[FeatureGroup]:
        have = {c for b, c in self.common if b in self.bands}
        for name in cfg.features.indices:
            needed, _ = INDICES[name]
            missing = [b for c in (needed or ()) if c not in have for b, cn in self.common if cn == c]
            if missing:
                raise ConfigError(f"features.indices: {name!r} needs band(s) {missing}, which "
                                  f"inputs.{self.name}.bands {list(self.bands)} lacks")
        channels = [*self.bands, *(i.upper() for i in cfg.features.indices)]
        return [series_group(self.name, self.label, channels, dates[self.label], self.prefix)]

    def _read_product(self, grid: GridSpec, acq: Acquisition, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """One product's bands (B, h, w) as stored and its validity (h, w) over ``window`` of the grid.

        Pixels the product does not cover read as nodata / an invalid mask value: invalid, like clouds.
        """
        from rasterio.enums import Resampling

        from chain.raster import read_on_grid

        h, w = int(window.height), int(window.width)
        if self.mask_invalid_bits:
            qa = read_on_grid(acq.mask, grid, window, Resampling.nearest, nodata=self.mask_invalid_bits)
            valid = (qa & self.mask_invalid_bits) == 0
        else:
            valid = np.isin(read_on_grid(acq.mask, grid, window, Resampling.nearest, nodata=255), self.mask_valid_values)
        for extra in acq.extra_masks:
            valid &= read_on_grid(extra, grid, window, Resampling.nearest, nodata=255) == 0
        resampling = Resampling[self.resampling]
        values = None
        for b, band in enumerate(self.bands):
            arr = read_on_grid(acq.bands[band], grid, window, resampling, nodata=self.nodata)
            if values is None:
                values = np.empty((len(self.bands), h, w), dtype=arr.dtype)
            values[b] = arr
            if self.nodata is not None:
                valid &= arr != self.nodata
            if self.saturation is not None:
                valid &= arr < self.saturation
            if arr.dtype.kind == "f":
                valid &= np.isfinite(arr)
        assert values is not None
        return values, valid

    def per_product_reflectance(self) -> bool:
        """True when products carry their own offsets (Sen2Cor baselines): convert before merging/gap-filling."""
        return any(a.offsets for a in self.acquisitions)

    def read_series(self, grid: GridSpec, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Values (T, B, h, w) and validity (T, h, w) over ``window``, one entry per date.

        Several products on one date are merged: each pixel takes the first product, in catalogue
        order, that is valid there. Values are raw as stored, or float32 reflectance when products
        have their own offsets (see ``per_product_reflectance``).
        """
        h, w = int(window.height), int(window.width)
        dates = self.dates
        index = {d: i for i, d in enumerate(dates)}
        to_refl = self.per_product_reflectance()
        values: np.ndarray | None = None
        valid = np.zeros((len(dates), h, w), dtype=bool)
        seen = np.zeros(len(dates), dtype=bool)
        for acq in self.acquisitions:
            t = index[acq.date]
            v, ok = self._read_product(grid, acq, window)
            if to_refl:
                off = np.array([acq.offsets.get(b, self.offset) for b in self.bands], np.float32)[:, None, None]
                v = v.astype(np.float32) * np.float32(self.scale) + off
            if values is None:
                values = np.empty((len(dates), len(self.bands), h, w), dtype=v.dtype)
            if not seen[t]:
                values[t] = v
                valid[t] = ok
                seen[t] = True
            else:
                take = ok & ~valid[t]
                values[t][:, take] = v[:, take]
                valid[t] |= ok
        assert values is not None
        return values, valid

    def read(self, grid: GridSpec, window: Window, groups: list[FeatureGroup], method: str) -> SourceBlock:
        from chain import gapfill

        (group,) = groups
        raw, valid = self.read_series(grid, window)
        T, B, h, w = raw.shape
        T_out = len(group.dates)
        # the stack is written in place, band-major as the group's names: bands (B, T_out), then the indices
        values = scratch.empty((len(group.channels), T_out, h * w), np.float32)
        # else already reflectance (offsets differ between products)
        scale = None if self.per_product_reflectance() else self.scale
        gapfill.fill_into(raw.reshape(T, B, h * w), valid.reshape(T, h * w), self.dates, list(group.dates), method, values[:B],
                          scale, self.offset)
        bands = {name: values[i] for i, name in enumerate(self.bands)}  # (T_out, N) reflectance
        common = dict(self.common)
        named = {common.get(b, b): v for b, v in bands.items()}
        for c, channel in enumerate(group.channels[len(self.bands):], start=B):
            needed, fn = INDICES[channel.lower()]
            fn({k: named[k] for k in needed} if needed else bands, values[c])
        count = valid.sum(axis=0).astype(np.uint16)
        return SourceBlock(values.reshape(-1, h, w), count, {self.clear_band: count})
