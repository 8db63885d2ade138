"""The per-window feature pipeline: read onto the grid -> mask -> gap-fill -> indices.

One function, ``compute_features``, serves sampling and classification alike, so a full-scene
feature cube never has to be written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from chain import gapfill
from chain.catalog import Catalog
from chain.config import Config
from chain.errors import ConfigError
from chain.masks import finite_everywhere
from chain.raster import pixel_major, read_on_grid


def _normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s != 0, (a - b) / s, 0.0).astype(np.float32)


# name -> (bands it needs, function of {band: reflectance array})
INDICES: dict[str, tuple[tuple[str, ...] | None, Callable[[dict[str, np.ndarray]], np.ndarray]]] = {
    "ndvi": (("B8", "B4"), lambda b: _normalized_difference(b["B8"], b["B4"])),
    # Gao's NDWI (NIR vs SWIR), sensitive to vegetation water content, as in iota2's default features
    "ndwi": (("B8", "B11"), lambda b: _normalized_difference(b["B8"], b["B11"])),
    # None = every band of the series
    "brightness": (None, lambda b: np.sqrt(sum(v * v for v in b.values())).astype(np.float32)),
}


@dataclass(frozen=True)
class FeatureSpec:
    bands: tuple[str, ...]
    indices: tuple[str, ...]
    dates: tuple[dt.date, ...]
    stack: tuple[str, ...] = ()  # names of the bands of the feature-stack input, appended as they are
    method: str = "linear"  # gap-filling method
    s1: tuple[str, ...] = ()  # names of the Sentinel-1 features (chain.sentinel1.feature_names)
    spot: tuple[str, ...] = ()  # names of the SPOT PAN/MS features (chain.spot.SpotPair.feature_names)

    @property
    def names(self) -> list[str]:
        per = [*self.bands, *(i.upper() for i in self.indices)]
        return [f"{f}_{d:%Y%m%d}" for f in per for d in self.dates] + list(self.s1) + list(self.spot) + list(self.stack)

    def to_dict(self) -> dict[str, Any]:
        return {"bands": list(self.bands), "indices": list(self.indices), "method": self.method,
                "dates": [d.isoformat() for d in self.dates], "s1": list(self.s1), "spot": list(self.spot),
                "stack": list(self.stack), "names": self.names}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        return cls(tuple(d["bands"]), tuple(d["indices"]), tuple(dt.date.fromisoformat(x) for x in d["dates"]),
                   tuple(d.get("stack", ())), d.get("method", "linear"), tuple(d.get("s1", ())), tuple(d.get("spot", ())))


def output_dates(cfg: Config, cat: Catalog) -> list[dt.date]:
    """The regular date grid; raises ConfigError when it does not overlap the acquisitions."""
    if not cat.acquisitions:
        return []  # no time series: nothing to gap-fill
    first, last = cat.dates[0], cat.dates[-1]
    start = cfg.gapfill.start or first
    end = cfg.gapfill.end or last
    if start > last or end < first:
        raise ConfigError(
            f"gapfill dates {start}..{end} do not overlap the acquisitions ({first}..{last}, {len(cat.dates)} dates); "
            "set gapfill.start/end inside that range or leave them out to use it"
        )
    if start > end:
        raise ConfigError(f"gapfill.start ({start}) is after gapfill.end ({end})")
    return gapfill.date_grid(start, end, cfg.gapfill.interval_days)


def feature_spec(cfg: Config, cat: Catalog) -> FeatureSpec:
    stack = tuple(n for f in cat.stack for n in f.names)
    s1 = ()
    if cat.s1:
        from chain import sentinel1

        s1 = tuple(sentinel1.feature_names(list(cat.s1), cat.s1_params["polarisations"], cat.s1_params["interval_days"]))
    spot = tuple(cat.spot.feature_names()) if cat.spot else ()
    if not cat.acquisitions:
        return FeatureSpec((), (), (), stack, cfg.gapfill.method, s1, spot)
    for name in cfg.features.indices:
        needed, _ = INDICES[name]
        missing = [b for b in (needed or ()) if b not in cat.bands]
        if missing:
            raise ConfigError(f"features.indices: {name!r} needs band(s) {missing}, which inputs.s2.bands {list(cat.bands)} lacks")
    return FeatureSpec(cat.bands, tuple(cfg.features.indices), tuple(output_dates(cfg, cat)), stack, cfg.gapfill.method, s1, spot)


def _read_product(cat: Catalog, acq: Any, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """One product's bands (B, h, w) as stored and its validity (h, w) over ``window`` of the grid.

    Pixels the product does not cover read as nodata / mask 255: invalid, like clouds.
    """
    h, w = int(window.height), int(window.width)
    valid = np.isin(read_on_grid(acq.mask, cat.grid, window, Resampling.nearest, nodata=255), cat.mask_valid_values)
    for extra in acq.extra_masks:
        valid &= read_on_grid(extra, cat.grid, window, Resampling.nearest, nodata=255) == 0
    resampling = Resampling[cat.resampling]
    values = None
    for b, band in enumerate(cat.bands):
        arr = read_on_grid(acq.bands[band], cat.grid, window, resampling, nodata=cat.nodata)
        if values is None:
            values = np.empty((len(cat.bands), h, w), dtype=arr.dtype)
        values[b] = arr
        if cat.nodata is not None:
            valid &= arr != cat.nodata
        if cat.saturation is not None:
            valid &= arr < cat.saturation
        if arr.dtype.kind == "f":
            valid &= np.isfinite(arr)
    assert values is not None
    return values, valid


def per_product_reflectance(cat: Catalog) -> bool:
    """True when products carry their own offsets (Sen2Cor baselines): convert before merging/gap-filling."""
    return any(a.offsets for a in cat.acquisitions)


def read_series(cat: Catalog, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Values (T, B, h, w) and validity (T, h, w) over ``window``, one entry per date.

    Several products on one date (neighbouring tiles, two orbits) are merged: each pixel takes the
    first product, in catalogue order, that is valid there. Values are raw as stored, or float32
    reflectance when products have their own offsets (see ``per_product_reflectance``).
    """
    h, w = int(window.height), int(window.width)
    dates = cat.dates
    index = {d: i for i, d in enumerate(dates)}
    to_refl = per_product_reflectance(cat)
    values: np.ndarray | None = None
    valid = np.zeros((len(dates), h, w), dtype=bool)
    seen = np.zeros(len(dates), dtype=bool)
    for acq in cat.acquisitions:
        t = index[acq.date]
        v, ok = _read_product(cat, acq, window)
        if to_refl:
            off = np.array([acq.offsets.get(b, cat.offset) for b in cat.bands], np.float32)[:, None, None]
            v = v.astype(np.float32) * np.float32(cat.scale) + off
        if values is None:
            values = np.empty((len(dates), len(cat.bands), h, w), dtype=v.dtype)
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


@dataclass
class FeatureBlock:
    values: np.ndarray  # (F, h, w) float32, NaN where the pixel has no valid observation
    n_valid: np.ndarray  # (h, w) uint16: clear observations per pixel (0: nothing to classify)
    per_sensor: dict[str, np.ndarray] = field(default_factory=dict)  # PixelsValidity bands: name -> (h, w) uint16

    @property
    def valid(self) -> np.ndarray:
        return self.n_valid > 0


def read_stack(cat: Catalog, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The feature-stack bands (F, h, w) float32 and, per file, validity (files, h, w)."""
    parts, valid = [], []
    for f in cat.stack:
        arr = read_on_grid(f.path, cat.grid, window, Resampling[cat.stack_resampling], nodata=cat.stack_nodata,
                           band=list(range(1, len(f.names) + 1))).astype(np.float32, copy=False)
        parts.append(arr)
        ok = finite_everywhere(arr, None if cat.stack_nodata is None else np.float32(cat.stack_nodata))
        valid.append(ok)
    if len(parts) == 1:
        return parts[0], np.stack(valid)
    if all(pixel_major(p) is not None for p in parts):  # keep the pixel-major layout (see raster.read_window)
        return np.concatenate([p.transpose(1, 2, 0) for p in parts], axis=2).transpose(2, 0, 1), np.stack(valid)
    return np.concatenate(parts, axis=0), np.stack(valid)


def compute_features(cat: Catalog, spec: FeatureSpec, window: Window) -> FeatureBlock:
    blocks: list[np.ndarray] = []
    n_valid = None
    per_sensor: dict[str, np.ndarray] = {}
    if cat.acquisitions:
        series = _series_features(cat, spec, window)
        blocks.append(series.values)
        n_valid = series.n_valid
        per_sensor["S2 clear dates"] = series.n_valid
    if cat.s1:
        from chain import sentinel1

        p = cat.s1_params
        values, nv = sentinel1.compute(list(cat.s1), p["polarisations"], p["interval_days"], p["db"], p["nodata"],
                                       p["resampling"], cat.grid, window)
        blocks.append(values)
        n_valid = nv if n_valid is None else n_valid
        per_sensor["S1 valid dates"] = nv.astype(np.uint16)
    if cat.spot:
        from chain.spot import grid_features

        values, ok = grid_features(cat.spot, cat.grid, window)
        blocks.append(values)
        per_sensor["SPOT valid"] = ok.astype(np.uint16)
        n_valid = ok.astype(np.uint16) if n_valid is None else np.where(ok, n_valid, 0).astype(np.uint16)
    if cat.stack:
        values, ok = read_stack(cat, window)
        everywhere = ok.all(axis=0)
        if not everywhere.all():
            values[:, ~everywhere] = np.nan
        blocks.append(values)
        per_sensor["feature stack valid files"] = ok.sum(axis=0).astype(np.uint16)
        n_valid = ok.sum(axis=0).astype(np.uint16) if n_valid is None else np.where(everywhere, n_valid, 0).astype(np.uint16)
    assert n_valid is not None
    if cat.aoi_wkt is not None:
        inside = aoi_mask(cat, window)
        n_valid = np.where(inside, n_valid, 0).astype(np.uint16)
        per_sensor = {k: np.where(inside, v, 0).astype(np.uint16) for k, v in per_sensor.items()}
    return FeatureBlock(np.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0], n_valid, per_sensor)


def aoi_mask(cat: Catalog, window: Window) -> np.ndarray:
    """True for the pixels of ``window`` whose centre lies inside the area of interest."""
    import shapely
    from rasterio.features import geometry_mask

    return geometry_mask([shapely.from_wkt(cat.aoi_wkt)], out_shape=(int(window.height), int(window.width)),
                         transform=cat.grid.window_transform(window), invert=True)


def _series_features(cat: Catalog, spec: FeatureSpec, window: Window) -> FeatureBlock:
    raw, valid = read_series(cat, window)
    T, B, h, w = raw.shape
    in_days = gapfill.to_days(cat.dates)
    out_days = gapfill.to_days(list(spec.dates))
    fill = gapfill.spline if spec.method == "spline" else gapfill.linear
    filled = fill(raw.reshape(T, B, h * w), valid.reshape(T, h * w), in_days, out_days)
    if not per_product_reflectance(cat):  # else already reflectance (offsets differ between products)
        filled = filled * np.float32(cat.scale) + np.float32(cat.offset)  # (T_out, B, N) reflectance
    bands = {name: filled[:, i, :] for i, name in enumerate(cat.bands)}
    blocks = [filled.transpose(1, 0, 2)]  # (B, T_out, N): band-major, as in FeatureSpec.names
    for name in spec.indices:
        needed, fn = INDICES[name]
        blocks.append(fn({k: bands[k] for k in (needed or cat.bands)})[None])
    values = np.concatenate(blocks, axis=0).reshape(-1, h, w)
    return FeatureBlock(values.astype(np.float32, copy=False), valid.sum(axis=0).astype(np.uint16))
