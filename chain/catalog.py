"""The catalogue: the reference grid, the area of interest, and what each input source found.

Building it is discovery: each source configured under ``inputs:`` finds its files and checks their
headers (cheap), so it doubles as the input check that runs before any heavy work. Readers go back to
the original files, except those slow to read tile by tile, which ingest copies as tiled GeoTIFFs (the catalogue
written by ingest names the copies: ``chain.tiled_copies``). Without grid settings, the grid is the one of the
source of lowest ``grid_rank`` (Sentinel-2's first 10 m band, ...), widened to cover all its products.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chain.errors import ChainError, ConfigError, InputMissingError, Problems
from chain.grid import GridSpec
from chain.sources.base import Header, Source, source_class

if TYPE_CHECKING:
    from chain.config import Config


@dataclass(frozen=True)
class Catalog:
    grid: GridSpec
    sources: tuple[Source, ...]  # in stack order (feature_rank)
    aoi_wkt: str | None = None  # area of interest in the grid's CRS: pixels outside it are not mapped

    def source(self, name: str) -> Any:
        """The source called ``name`` (``None`` when not configured)."""
        return next((s for s in self.sources if s.name == name), None)

    def files(self) -> list[str]:
        return [f for s in self.sources for f in s.files()]

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid.to_dict(), "sources": [{"source": s.name, **s.to_dict()} for s in self.sources],
                "aoi_wkt": self.aoi_wkt}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Catalog:
        sources = tuple(source_class(s["source"]).from_dict({k: v for k, v in s.items() if k != "source"}) for s in d["sources"])
        return cls(GridSpec.from_dict(d["grid"]), sources, d.get("aoi_wkt"))


MAX_GRID_PX = 50_000 * 50_000  # 25 Gpx: beyond, a grid is a mistake (a mislabelled CRS), not an area


def _far_from_the_others(bounds: list[tuple[float, float, float, float]], headers: list[Header]) -> None:
    """A product whose footprint is far from all the others' (more than their own extent away) most likely has a
    mislabelled CRS (EPSG:32640 for 32740 puts it 10,000 km north): refuse it by name before the grid explodes."""
    if len(bounds) < 2:
        return
    import numpy as np

    cx = np.array([(b[0] + b[2]) / 2 for b in bounds])
    cy = np.array([(b[1] + b[3]) / 2 for b in bounds])
    size = max(float(np.median([b[2] - b[0] for b in bounds])), float(np.median([b[3] - b[1] for b in bounds])))
    mx, my = float(np.median(cx)), float(np.median(cy))
    far = [i for i in range(len(bounds)) if max(abs(cx[i] - mx), abs(cy[i] - my)) > 3 * size]
    if far and len(far) < len(bounds) / 2:
        from chain.errors import InputError
        from chain.fingerprint import real_file

        names = [f"{real_file(headers[i].path)} ({headers[i].crs.to_string()})" for i in far[:5]]
        raise InputError(f"{len(far)} product(s) lie far from the others ({', '.join(names)}; the others are around "
                         f"x={mx:,.0f}, y={my:,.0f} in {headers[0].crs.to_string()}): is their CRS mislabelled (e.g. EPSG:32640 for "
                         "32740, north for south)? Fix it (gdal_edit.py -a_srs) or remove them from the input folder")


def union_extent(first: Header, others: list[Header]) -> Header:
    """``first``, widened to cover every header (several tiles, even in other UTM zones)."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = first.bounds
    every = [first.bounds] + [h.bounds if h.crs == first.crs else transform_bounds(h.crs, first.crs, *h.bounds) for h in others]
    _far_from_the_others(every, [first, *others])
    for b in every[1:]:
        left, bottom, right, top = min(left, b[0]), min(bottom, b[1]), max(right, b[2]), max(top, b[3])
    if (left, bottom, right, top) == tuple(first.bounds):
        return first
    spec = GridSpec.from_bounds(first.crs, (left, bottom, right, top), abs(first.transform.a))
    return dataclasses.replace(first, transform=spec.affine, width=spec.width, height=spec.height)


def define_grid(cfg: Config, first: Header, lattices: list[Header] | None = None) -> GridSpec:
    """The reference grid: ``first``'s grid, unless the config sets crs/resolution/bounds. The grid's pixel edges are
    those of the first image of ``first`` + ``lattices`` in the grid's CRS whose pixel is a whole number of grid pixels
    (SPOT's MS lattice for a grid at the PAN resolution: the grid is then the PAN lattice); else multiples of the
    resolution."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    g = cfg.grid
    if g.crs is None and g.resolution_m is None and g.bounds is None:
        return GridSpec(first.crs.to_wkt(), tuple(first.transform)[:6], first.width, first.height)
    try:
        crs = CRS.from_user_input(g.crs) if g.crs else first.crs
    except CRSError as exc:
        raise ConfigError(f"grid.crs {g.crs!r} is not a CRS GDAL knows ({exc}); use e.g. 'EPSG:32740'") from None
    if crs.is_geographic and g.resolution_m is not None:
        raise ConfigError(f"grid.crs {g.crs!r} is geographic (degrees) but grid.resolution_m is in metres; use a projected CRS (UTM)")
    res = g.resolution_m or abs(first.transform.a)
    if g.bounds is not None:
        bounds = g.bounds
    else:
        from rasterio.warp import transform_bounds

        bounds = transform_bounds(first.crs, crs, *first.bounds)
    for h in [first, *(lattices or [])]:
        step = abs(h.transform.a) / res
        if h.crs == crs and abs(h.transform.a) == abs(h.transform.e) and step >= 1 and abs(step - round(step)) < 1e-9:
            x0, y0 = h.transform.c, h.transform.f
            left, bottom, right, top = bounds
            left = x0 + math.floor((left - x0) / res + 1e-9) * res
            top = y0 + math.ceil((top - y0) / res - 1e-9) * res
            return GridSpec(crs.to_wkt(), (res, 0.0, left, 0.0, -res, top), max(1, math.ceil((right - left) / res - 1e-9)),
                            max(1, math.ceil((top - bottom) / res - 1e-9)))
    return GridSpec.from_bounds(crs, bounds, res)


def build_catalog(cfg: Config) -> Catalog:
    """Discover every configured source, define the grid, check that each product lies in the area.

    Every source is discovered even when another fails, and the reference and AOI files are checked
    too, so that one call reports every missing or unusable input (``chain.errors.Problems``).
    """
    found, problems = [], []
    for name, section in cfg.inputs.sources().items():
        try:
            found.append(source_class(name, f"inputs.{name}").discover(section, cfg))
        except ChainError as exc:
            problems.append(exc)
    for key, path in (("inputs.reference.path", cfg.inputs.reference.path), ("grid.aoi", cfg.grid.aoi)):
        if path is not None and not path.exists():
            problems.append(InputMissingError(f"{key}: {str(path)!r} does not exist (expected a polygon file: GPKG, GeoJSON or Shapefile)"))
    Problems.collect(problems)
    sources = sorted(found, key=lambda s: s.feature_rank)
    primary = min(sources, key=lambda s: s.grid_rank)
    headers = primary.grid_headers()
    first = union_extent(headers[0], headers[1:])
    aoi_wkt = None
    if cfg.grid.aoi is not None:
        from rasterio.crs import CRS

        from chain.vector import read_aoi

        crs = CRS.from_user_input(cfg.grid.crs) if cfg.grid.crs else first.crs
        aoi = read_aoi(cfg.grid.aoi, crs)
        aoi_wkt = aoi.wkt
        cfg = cfg.model_copy(update={"grid": cfg.grid.model_copy(update={"bounds": aoi.bounds, "crs": crs.to_string()})})
    grid = define_grid(cfg, first, [h for s in sources if s is not primary for h in s.grid_headers()[:1]])
    if grid.width * grid.height > MAX_GRID_PX:
        raise ConfigError(f"the grid would be {grid.width:,} x {grid.height:,} px of {grid.res[0]:g} m ({grid.bounds}): far more than "
                          "any area to map; check grid.bounds / grid.resolution_m / grid.aoi, and the inputs' CRS")
    if cfg.grid.bounds is not None:  # explicit bounds or an AOI: a product outside the area is another tile's
        for s in sources:
            s.check_area(grid)
    return Catalog(grid, tuple(sources), aoi_wkt)
