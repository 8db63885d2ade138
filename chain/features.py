"""The per-window feature pipeline: every source reads its window onto the grid, and one rule says
which pixel can be mapped.

One function, ``compute_features``, serves sampling, classification and patch models alike, so a
full-scene feature cube never has to be written. Sources are stacked in the spec's group order; the
first source's count of observations is the pixel's (``n_valid``), and a later source vetoes the
pixels it does not cover (``SourceBlock.usable``).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.masks import finite_everywhere
from chain.spec import FeatureGroup, FeatureSpec

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.catalog import Catalog
    from chain.config import Config


def date_grids(cfg: Config, cat: Catalog) -> dict[str, dict[str, list[dt.date]]]:
    """Per source, per series label: the regular output dates (raises ConfigError when they cannot be made)."""
    return {s.name: grids for s in cat.sources if (grids := s.date_grids(cfg))}


def feature_spec(cfg: Config, cat: Catalog, dates: dict[str, dict[str, list[dt.date]]] | None = None) -> FeatureSpec:
    """The stack's layout: each source's groups, in stack order (``dates``: as ``date_grids`` gave them)."""
    dates = date_grids(cfg, cat) if dates is None else dates
    groups: list[FeatureGroup] = []
    for s in cat.sources:
        groups += s.groups(dates.get(s.name, {}), cfg)
    return FeatureSpec(tuple(groups), cfg.gapfill.method)


@dataclass
class FeatureBlock:
    values: np.ndarray  # (F, h, w) float32, NaN where the pixel has no usable value
    n_valid: np.ndarray  # (h, w) uint16: observations of the pixel (0: nothing to classify)
    per_sensor: dict[str, np.ndarray] = field(default_factory=dict)  # PixelsValidity bands: name -> (h, w) uint16

    @property
    def valid(self) -> np.ndarray:
        return self.n_valid > 0

    def mappable(self) -> np.ndarray:
        """(h, w): the pixels a model can map. The one rule: observed at least once, and every feature finite."""
        return mappable(self.values, self.n_valid)


def mappable(values: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """The pixels that can be mapped: ``n_valid > 0`` and every feature of ``values`` (F, h, w) finite."""
    return (n_valid > 0) & finite_everywhere(values)


_reuse = threading.local()  # per thread: dask runs one tile per worker thread


@contextmanager
def reused_reads() -> Iterator[None]:
    """Inside, ``compute_features`` computes a window once and gives the same block to every later caller.

    Classify maps every run's model (and patch models read the same halo) from one read and one gap-fill
    per tile: the block is shared read-only, and dropped when the tile's work leaves the context.
    """
    outer = getattr(_reuse, "blocks", None)
    _reuse.blocks = {} if outer is None else outer
    try:
        yield
    finally:
        if outer is None:
            _reuse.blocks = None


def compute_features(cat: Catalog, spec: FeatureSpec, window: Window) -> FeatureBlock:
    """Every source's features over ``window``, stacked in the spec's order (see the module docstring)."""
    cache = getattr(_reuse, "blocks", None)
    if cache is None:
        return _compute_features(cat, spec, window)
    key = (id(cat), spec, int(window.row_off), int(window.col_off), int(window.height), int(window.width))
    if key not in cache:
        cache[key] = _compute_features(cat, spec, window)
        cache[key].values.flags.writeable = False  # shared by every model of the tile
    return cache[key]


def _compute_features(cat: Catalog, spec: FeatureSpec, window: Window) -> FeatureBlock:
    if spec.cache is not None:  # features.cache: zarr, the cube complete: read, not recomputed
        from chain.cube import read_window

        return read_window(spec.cache, spec, window)
    blocks: list[np.ndarray] = []
    n_valid: np.ndarray | None = None
    per_sensor: dict[str, np.ndarray] = {}
    for s in cat.sources:
        groups = [g for _, g in spec.of_source(s.name)]
        if not groups:
            continue
        block = s.read(cat.grid, window, groups, spec.method)
        blocks.append(block.values)
        per_sensor.update(block.per_sensor)
        if n_valid is None:
            n_valid = block.count
        elif block.usable is not None:
            n_valid = np.where(block.usable, n_valid, 0).astype(np.uint16)
    assert n_valid is not None, "a feature spec without any group"
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


def series_index(cat: Catalog, spec: FeatureSpec, source: str, why: str = "this model") -> tuple[tuple[int, ...], int]:
    """``source``'s series in the stack, time-major (stack indices) and its number of dates."""
    from chain.errors import ConfigError
    from chain.sources.base import source_class

    groups = spec.of_source(source)
    if not groups:
        raise ConfigError(f"{why} needs the {source_class(source).title} series: add inputs.{source}")
    return source_class(source).series_index(groups)


def series_dates(spec: FeatureSpec, source: str, steps: int) -> tuple[str, ...]:
    """The ISO dates of ``source``'s series as ``series_index`` lays it out (its first group's, cut to ``steps``)."""
    groups = [g for _, g in spec.of_source(source) if g.is_series]
    return tuple(d.isoformat() for d in groups[0].dates[:steps]) if groups else ()


def cube_tile(tile: Any, cat: Catalog, spec: FeatureSpec, out_dir: Any) -> str:
    """The features of one tile as a float32 GeoTIFF with named bands (``features.write_cube``)."""
    from chain.raster import write_tile

    block = compute_features(cat, spec, tile.window)
    write_tile(out_dir / f"{tile.id}.tif", block.values, cat.grid, tile.window, float("nan"), descriptions=spec.names)
    return str(tile.id)
