"""Scene discovery: the Sentinel-2-like series as one folder per date of single-band GeoTIFFs + a mask.

The catalogue records dates, files and the reference grid. Nothing is copied: readers go back to
the original files through ``chain.raster.read_on_grid``. Only headers are opened here, so building
the catalogue is cheap and doubles as the input check that runs before any heavy work.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError

from chain.config import Config, S2Input, StackInput
from chain.errors import ConfigError, InputError, InputMissingError
from chain.grid import GridSpec

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".vrt"}


@dataclass(frozen=True)
class Acquisition:
    date: dt.date
    bands: dict[str, str]  # band name -> file path (or a GDAL /vsizip/ path)
    mask: str  # the cloud mask: values outside Catalog.mask_valid_values are invalid
    extra_masks: tuple[str, ...] = ()  # e.g. THEIA edge and saturation masks: any non-zero value is invalid
    offsets: dict[str, float] = field(default_factory=dict)  # per-band reflectance offset of this product (Sen2Cor)


@dataclass(frozen=True)
class StackFile:
    path: str
    names: tuple[str, ...]  # feature name of each band


@dataclass(frozen=True)
class Catalog:
    grid: GridSpec
    bands: tuple[str, ...]
    acquisitions: tuple[Acquisition, ...]
    nodata: float | None
    scale: float
    offset: float
    saturation: float | None
    mask_valid_values: tuple[int, ...]
    resampling: str
    stack: tuple[StackFile, ...] = ()
    stack_nodata: float | None = None
    stack_resampling: str = "nearest"
    s1: tuple[Any, ...] = ()  # chain.sentinel1.S1File
    s1_params: dict[str, Any] = field(default_factory=dict)  # polarisations, interval_days, db, nodata, resampling
    spot: Any = None  # chain.spot.SpotPair
    aoi_wkt: str | None = None  # area of interest in the grid's CRS: pixels outside it are not mapped

    @property
    def dates(self) -> list[dt.date]:
        """Acquisition dates, each once (several products on a date are merged when read)."""
        return sorted({a.date for a in self.acquisitions})

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid.to_dict(),
            "bands": list(self.bands),
            "acquisitions": [{"date": a.date.isoformat(), "bands": a.bands, "mask": a.mask, "extra_masks": list(a.extra_masks),
                              "offsets": a.offsets} for a in self.acquisitions],
            "nodata": self.nodata,
            "scale": self.scale,
            "offset": self.offset,
            "saturation": self.saturation,
            "mask_valid_values": list(self.mask_valid_values),
            "resampling": self.resampling,
            "stack": [{"path": f.path, "names": list(f.names)} for f in self.stack],
            "stack_nodata": self.stack_nodata,
            "stack_resampling": self.stack_resampling,
            "s1": _s1_dicts(self.s1),
            "s1_params": self.s1_params,
            "spot": self.spot.to_dict() if self.spot else None,
            "aoi_wkt": self.aoi_wkt,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Catalog":
        return cls(
            grid=GridSpec.from_dict(d["grid"]),
            bands=tuple(d["bands"]),
            acquisitions=tuple(
                Acquisition(dt.date.fromisoformat(a["date"]), dict(a["bands"]), a["mask"], tuple(a.get("extra_masks", ())),
                            dict(a.get("offsets", {})))
                for a in d["acquisitions"]
            ),
            nodata=d["nodata"],
            scale=d["scale"],
            offset=d["offset"],
            saturation=d["saturation"],
            mask_valid_values=tuple(d["mask_valid_values"]),
            resampling=d["resampling"],
            stack=tuple(StackFile(f["path"], tuple(f["names"])) for f in d.get("stack", [])),
            stack_nodata=d.get("stack_nodata"),
            stack_resampling=d.get("stack_resampling", "nearest"),
            s1=_s1_files(d.get("s1", [])),
            s1_params=d.get("s1_params", {}),
            spot=_spot_pair(d.get("spot")),
            aoi_wkt=d.get("aoi_wkt"),
        )


def _spot_pair(d: dict[str, Any] | None) -> Any:
    if not d:
        return None
    from chain.spot import SpotPair

    return SpotPair.from_dict(d)


def _s1_dicts(files: tuple[Any, ...]) -> list[dict[str, Any]]:
    from chain.sentinel1 import to_dicts

    return to_dicts(list(files))


def _s1_files(items: list[dict[str, Any]]) -> tuple[Any, ...]:
    from chain.sentinel1 import from_dicts

    return tuple(from_dicts(items))


def _stem_matches(stem: str, name: str) -> bool:
    # "B8" must match "SENTINEL2_..._B8" and "B8" but not "..._B8A"
    return re.search(rf"(^|[_\-.]){re.escape(name)}$", stem, flags=re.IGNORECASE) is not None


def _find_file(folder: Path, name: str) -> Path | None:
    hits = sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and _stem_matches(p.stem, name))
    if len(hits) > 1:
        raise InputError(f"{folder}: several files match {name!r}: {[h.name for h in hits]}; keep one per date")
    return hits[0] if hits else None


def discover_s2(cfg: S2Input) -> list[Acquisition]:
    root = cfg.path
    if not root.is_dir():
        raise InputMissingError(f"inputs.s2.path: folder {str(root)!r} does not exist (expected one sub-folder per date)")
    try:
        pattern = re.compile(cfg.date_regex)
    except re.error as exc:
        raise ConfigError(f"inputs.s2.date_regex {cfg.date_regex!r} is not a valid regular expression: {exc}") from None
    acquisitions: dict[dt.date, Acquisition] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        m = pattern.search(folder.name)
        if not m:
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
            hit = _find_file(folder, band)
            if hit is None:
                missing.append(band)
            else:
                bands[band] = str(hit)
        mask = _find_file(folder, cfg.mask_name)
        if missing or mask is None:
            what = missing + ([f"mask '{cfg.mask_name}'"] if mask is None else [])
            raise InputMissingError(
                f"{folder}: missing {', '.join(what)}; expected one GeoTIFF per band named like '<prefix>_<BAND>.tif' "
                f"and a mask '<prefix>_{cfg.mask_name}.tif' (bands from inputs.s2.bands: {cfg.bands})"
            )
        acquisitions[date] = Acquisition(date, bands, str(mask))
    if not acquisitions:
        raise InputMissingError(
            f"inputs.s2.path: no date folder in {str(root)!r} (folder names must contain a date matching {cfg.date_regex!r}, e.g. 20210105)"
        )
    return [acquisitions[d] for d in sorted(acquisitions)]


def _header(path: str) -> dict[str, Any]:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(
                    f"raster {path!r} has no CRS; every input must be georeferenced (assign one with "
                    f"`gdal_edit.py -a_srs EPSG:xxxx {path}` if you know it)"
                )
            return {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height,
                    "nodata": src.nodata, "count": src.count, "bounds": src.bounds}
    except RasterioIOError as exc:
        raise InputError(f"raster {path!r} cannot be opened by GDAL ({exc}); the file may be corrupt or truncated") from None


def _union_extent(first: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    """The first band's header, widened to cover every product (several tiles, even in other UTM zones)."""
    from rasterio.coords import BoundingBox
    from rasterio.warp import transform_bounds

    left, bottom, right, top = first["bounds"]
    for h in others:
        b = h["bounds"] if h["crs"] == first["crs"] else transform_bounds(h["crs"], first["crs"], *h["bounds"])
        left, bottom, right, top = min(left, b[0]), min(bottom, b[1]), max(right, b[2]), max(top, b[3])
    if (left, bottom, right, top) == tuple(first["bounds"]):
        return first
    res = abs(first["transform"].a)
    spec = GridSpec.from_bounds(first["crs"], (left, bottom, right, top), res)
    return {**first, "bounds": BoundingBox(*spec.bounds), "transform": spec.affine, "width": spec.width, "height": spec.height}


def define_grid(cfg: Config, first_band: dict[str, Any]) -> GridSpec:
    """The reference grid: the first 10 m-class band's grid, unless the config sets crs/resolution/bounds."""
    g = cfg.grid
    if g.crs is None and g.resolution_m is None and g.bounds is None:
        t = first_band["transform"]
        return GridSpec(first_band["crs"].to_wkt(), tuple(t)[:6], first_band["width"], first_band["height"])
    try:
        crs = CRS.from_user_input(g.crs) if g.crs else first_band["crs"]
    except CRSError as exc:
        raise ConfigError(f"grid.crs {g.crs!r} is not a CRS GDAL knows ({exc}); use e.g. 'EPSG:32740'") from None
    if crs.is_geographic and g.resolution_m is not None:
        raise ConfigError(f"grid.crs {g.crs!r} is geographic (degrees) but grid.resolution_m is in metres; use a projected CRS (UTM)")
    res = g.resolution_m or abs(first_band["transform"].a)
    if g.bounds is not None:
        bounds = g.bounds
    else:
        from rasterio.warp import transform_bounds

        bounds = transform_bounds(first_band["crs"], crs, *first_band["bounds"])
    return GridSpec.from_bounds(crs, bounds, res)


def _check_products_in_area(grid: GridSpec, acquisitions: list[Acquisition], headers: dict[str, Any], band: str) -> None:
    """A product that does not touch the grid's area is another tile's: refuse it by name."""
    from rasterio.warp import transform_bounds

    gl, gb, gr, gt = grid.bounds
    for acq in acquisitions:
        h = headers[acq.bands[band]]
        b = tuple(h["bounds"]) if h["crs"] == grid.crs else transform_bounds(h["crs"], grid.crs, *h["bounds"])
        if b[0] >= gr or b[2] <= gl or b[1] >= gt or b[3] <= gb:
            raise InputError(
                f"{real_file(acq.bands[band])}: this product ({acq.date}) lies outside the area mapped "
                f"(grid bounds {tuple(round(v) for v in grid.bounds)}); it belongs to another tile: remove it from "
                "inputs.s2.path or widen grid.bounds / grid.aoi"
            )


def _within_range(cfg: Config, acquisitions: list[Acquisition]) -> list[Acquisition]:
    """Drop (with a warning) products far outside gapfill.start/end: one interval beyond is kept for interpolation."""
    import datetime as _dt
    import logging

    g = cfg.gapfill
    lo = g.start - _dt.timedelta(days=g.interval_days) if g.start else None
    hi = g.end + _dt.timedelta(days=g.interval_days) if g.end else None
    kept = [a for a in acquisitions if (lo is None or a.date >= lo) and (hi is None or a.date <= hi)]
    skipped = sorted({a.date for a in acquisitions} - {a.date for a in kept})
    if not kept:
        raise ConfigError(
            f"no acquisition between gapfill.start ({g.start}) and gapfill.end ({g.end}): the products span "
            f"{acquisitions[0].date} .. {acquisitions[-1].date}; set the dates inside that range or leave them out"
        )
    if skipped:
        logging.getLogger(__name__).warning(
            "%d acquisition date(s) outside gapfill.start/end (%s .. %s, +- %d days) skipped: %s",
            len(skipped), g.start, g.end, g.interval_days, ", ".join(map(str, skipped[:8])) + (" ..." if len(skipped) > 8 else ""))
    return kept


def _mask_valid_values(s2: S2Input | None) -> tuple[int, ...]:
    if s2 is None:
        return (0,)
    if s2.format == "sen2cor":
        from chain.sen2cor import scl_valid_values

        return scl_valid_values(s2.sen2cor_snow_invalid)
    return tuple(s2.mask_valid_values)


def discover_stack(cfg: StackInput) -> tuple[list[StackFile], dict[str, Any]]:
    """The stack's files and the feature name of each band; returns (files, header of the first)."""
    paths = cfg.path if isinstance(cfg.path, list) else [cfg.path]
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
    out, first = [], None
    for f in files:
        h = _header(str(f))
        first = first or h
        with rasterio.open(f) as src:
            descriptions = list(src.descriptions)
        if cfg.bands is not None:
            if len(cfg.bands) != h["count"]:
                raise InputError(f"{f}: has {h['count']} band(s) but inputs.stack.bands names {len(cfg.bands)}; give one name per band")
            names = list(cfg.bands)
        elif all(descriptions) and len(set(descriptions)) == len(descriptions):
            names = [str(d) for d in descriptions]
        else:
            names = [f"b{i}" for i in range(1, h["count"] + 1)]
        if len(files) > 1:
            names = [f"{f.stem}_{n}" for n in names]
        out.append(StackFile(str(f), tuple(names)))
    all_names = [n for f in out for n in f.names]
    dup = sorted({n for n in all_names if all_names.count(n) > 1})
    if dup:
        raise InputError(f"inputs.stack: feature names {dup[:5]} appear more than once; name the bands uniquely (inputs.stack.bands or band descriptions)")
    assert first is not None
    return out, first


def build_catalog(cfg: Config) -> Catalog:
    s2, stack_cfg = cfg.inputs.s2, cfg.inputs.stack
    acquisitions: list[Acquisition] = []
    first = None
    if s2 is not None:
        if s2.format == "theia":
            from chain.theia import discover_theia

            acquisitions = discover_theia(s2)
        elif s2.format == "sen2cor":
            from chain.sen2cor import discover_sen2cor

            acquisitions = discover_sen2cor(s2)
        else:
            acquisitions = discover_s2(s2)
        acquisitions = _within_range(cfg, acquisitions)
        headers = {}
        for acq in acquisitions:
            for path in [*acq.bands.values(), acq.mask, *acq.extra_masks]:
                headers[path] = _header(path)
        first = headers[acquisitions[0].bands[s2.bands[0]]]
    stack: list[StackFile] = []
    stack_nodata = None
    if stack_cfg is not None:
        stack, stack_first = discover_stack(stack_cfg)
        first = first or stack_first
        stack_nodata = stack_cfg.nodata if stack_cfg.nodata is not None else stack_first["nodata"]
    s1_files: list[Any] = []
    s1_cfg = cfg.inputs.s1
    if s1_cfg is not None:
        from chain.sentinel1 import discover_s1

        s1_files = discover_s1(s1_cfg)
        s1_headers = [_header(f.path) for f in s1_files]
        first = first or s1_headers[0]
    spot = None
    if cfg.inputs.spot is not None:
        from chain.spot import find_image, inspect

        sc = cfg.inputs.spot
        pan = find_image(sc.pan or sc.path, "P")
        ms = find_image(sc.ms or sc.path, "MS")
        spot = inspect(pan, ms, tuple(sc.ms_bands) if sc.ms_bands else None, sc.nodata, sc.max_shift_px)
        first = first or _header(ms)  # SPOT alone: mapped at the MS resolution unless grid says otherwise
    assert first is not None
    if s2 is not None:
        first = _union_extent(first, [headers[a.bands[s2.bands[0]]] for a in acquisitions])
    aoi_wkt = None
    if cfg.grid.aoi is not None:
        from chain.vector import read_aoi

        crs = CRS.from_user_input(cfg.grid.crs) if cfg.grid.crs else first["crs"]
        aoi = read_aoi(cfg.grid.aoi, crs)
        aoi_wkt = aoi.wkt
        cfg = cfg.model_copy(update={"grid": cfg.grid.model_copy(update={"bounds": aoi.bounds, "crs": crs.to_string()})})
    grid = define_grid(cfg, first)
    if s2 is not None:
        _check_products_in_area(grid, acquisitions, headers, s2.bands[0])
    nodata = None
    if s2 is not None:
        nodata = s2.nodata if s2.nodata is not None else first["nodata"]
        if nodata is None and s2.format == "theia":
            nodata = -10000  # THEIA's no-data reflectance, whether or not the files declare it
        if s2.format == "sen2cor" and s2.nodata is None:
            nodata = 0  # Sen2Cor: DN 0 is no data
    return Catalog(
        grid=grid,
        bands=tuple(s2.bands) if s2 else (),
        acquisitions=tuple(acquisitions),
        nodata=nodata,
        scale=s2.scale if s2 else 1.0,
        offset=s2.offset if s2 else 0.0,
        saturation=s2.saturation if s2 else None,
        mask_valid_values=_mask_valid_values(s2),
        resampling=s2.resampling if s2 else "nearest",
        stack=tuple(stack),
        stack_nodata=stack_nodata,
        stack_resampling=stack_cfg.resampling if stack_cfg else "nearest",
        s1=tuple(s1_files),
        s1_params=({"polarisations": list(s1_cfg.polarisations), "interval_days": s1_cfg.interval_days, "db": s1_cfg.db,
                    "nodata": s1_cfg.nodata, "resampling": s1_cfg.resampling} if s1_cfg else {}),
        spot=spot,
        aoi_wkt=aoi_wkt,
    )


def real_file(path: str) -> str:
    """The file on disk behind a GDAL path (the archive of a /vsizip/ path)."""
    if path.startswith("/vsizip/"):
        inner = path[len("/vsizip/"):]
        cut = inner.lower().find(".zip")
        return inner[: cut + 4] if cut >= 0 else inner
    return path


def fingerprint_files(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) for each file: cheap, and enough to notice a replaced input."""
    out = []
    for p in sorted({real_file(p) for p in paths}):
        st = Path(p).stat()
        out.append((p, st.st_size, st.st_mtime_ns))
    return out


def catalog_files(cat: Catalog) -> list[str]:
    return ([p for a in cat.acquisitions for p in [*a.bands.values(), a.mask, *a.extra_masks]]
            + [f.path for f in cat.stack] + [f.path for f in cat.s1] + ([cat.spot.pan, cat.spot.ms] if cat.spot else []))
