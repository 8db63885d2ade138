"""SPOT-6/7 (and Pleiades-like) PAN + MS pairs: discovery, checks, statistics and grid features.

A pair is a panchromatic image (one band, ~1.5 m) and a multispectral one (B, G, R, NIR, ~6 m),
each kept at its native resolution. Either may be a DIMAP v2 product (``DIM_*.XML``, read by
GDAL's DIMAP driver, JP2 or TIFF tiles) or a plain GeoTIFF. What ingest checks, before any
heavy work: both georeferenced in the same CRS, overlapping, the MS pixel an integer multiple of
the PAN pixel (the ratio is read from the data), the MS lattice on the PAN lattice; it measures the
residual shift between the two by phase correlation and reports it, and samples per-band
statistics (for deep-model normalisation and the run report).

For pixel classifiers the pair becomes features on the chain's grid: MS bands and NDVI averaged
into each grid cell, and the PAN mean, standard deviation and mean gradient inside each cell
(texture: rows of orchards, roofs, tree crowns, smooth pasture). Patch models read the images on
their own pixels instead (``native_kinds``): ``pan``, ``ms``, ``vhr`` (PAN + the MS bands repeated
onto the PAN pixels) and ``pxs`` (the MS bands pansharpened onto the PAN pixels, on the fly).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import rasterio
from pydantic import Field, model_validator
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window, from_bounds

from chain.errors import ConfigError, InputError, InputMissingError
from chain.grid import GridSpec
from chain.raster import read_on_grid
from chain.schema import PathFromConfig, Section
from chain.sources.base import Header, Source, SourceBlock, read_header
from chain.spec import FeatureGroup

if TYPE_CHECKING:
    from chain.config import Config

log = logging.getLogger(__name__)

MS_BANDS = ("blue", "green", "red", "nir")
TEXTURE = ("pan_mean", "pan_std", "pan_grad")


class SpotInput(Section):
    """A SPOT-6/7 (or Pleiades-like) PAN + MS pair, each at its native resolution.

    Either ``path``, a delivery folder holding the PAN and MS DIMAP products (``DIM_*_P_*.XML`` and
    ``DIM_*_MS_*.XML``), or ``pan`` and ``ms``, each a GeoTIFF, a ``DIM_*.XML`` or a DIMAP folder.
    """

    path: PathFromConfig | None = None
    pan: PathFromConfig | None = None
    ms: PathFromConfig | None = None
    ms_bands: list[str] | None = None  # names of the MS bands in file order; default blue, green, red, nir
    nodata: float | None = None  # default: the files' nodata
    max_shift_px: float = Field(0.5, gt=0)  # warn when PAN and MS are shifted by more (MS pixels)

    @model_validator(mode="after")
    def _one_way(self) -> SpotInput:
        if (self.path is None) == (self.pan is None and self.ms is None) or (self.path is None and (self.pan is None or self.ms is None)):
            raise ValueError("give either 'path' (a folder with the PAN and MS products) or both 'pan' and 'ms'")
        return self


@dataclass(frozen=True)
class SpotPair(Source):
    pan: str  # a GDAL-readable path (GeoTIFF or DIM_*.XML)
    ms: str
    ms_bands: tuple[str, ...]
    nodata: float | None
    pan_res: float
    ms_res: float
    ratio: int  # MS pixel size / PAN pixel size
    shift_m: tuple[float, float] = (0.0, 0.0)  # measured MS - PAN displacement (x east, y north), metres
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # band -> mean, std, p2, p98 (native DN)
    pan_fit: tuple[float, ...] = ()  # PAN ~ sum(w_b MS_b) + c: weights of the MS bands, then c (for pansharpening)

    name: ClassVar[str] = "spot"
    title: ClassVar[str] = "SPOT-6/7 PAN + MS"
    config: ClassVar[type[Section]] = SpotInput
    feature_rank: ClassVar[int] = 40
    grid_rank: ClassVar[int] = 40  # alone: mapped at the MS resolution unless grid says otherwise
    native_kinds: ClassVar[tuple[str, ...]] = ("pan", "ms", "vhr", "pxs")
    validity_band: ClassVar[str] = "SPOT valid"

    @classmethod
    def discover(cls, section: Any, cfg: Config) -> SpotPair:
        sc: SpotInput = section
        pan = find_image(sc.pan or sc.path, "P")  # type: ignore[arg-type]
        ms = find_image(sc.ms or sc.path, "MS")  # type: ignore[arg-type]
        return inspect(pan, ms, tuple(sc.ms_bands) if sc.ms_bands else None, sc.nodata, sc.max_shift_px)

    def files(self) -> list[str]:
        return [self.pan, self.ms]

    def grid_headers(self) -> list[Header]:
        return [read_header(self.ms)]

    def summary(self) -> str:
        return (f"PAN {self.pan_res:g} m + MS {self.ms_res:g} m (ratio {self.ratio}, bands {' '.join(self.ms_bands)}), "
                f"measured MS/PAN shift dx {self.shift_m[0]:+.2f} m, dy {self.shift_m[1]:+.2f} m")

    def groups(self, dates: dict[str, Any], cfg: Config) -> list[FeatureGroup]:
        return [FeatureGroup(self.name, "SPOT", tuple(self.feature_names()))]

    def read(self, grid: GridSpec, window: Window, groups: list[FeatureGroup], method: str) -> SourceBlock:
        values, ok = grid_features(self, grid, window)
        count = ok.astype(np.uint16)
        return SourceBlock(values, count, {self.validity_band: count}, usable=ok)

    # ---- the images on their own pixels (patch models) ---------------------------------------------

    def _path(self, kind: str) -> str:
        if kind not in self.native_kinds:
            raise ConfigError(f"SPOT has no native image {kind!r}; choose one of {', '.join(self.native_kinds)}")
        return self.ms if kind == "ms" else self.pan

    def native_channels(self, kind: str) -> int:
        self._path(kind)
        n_ms = len(self.ms_bands)
        return {"pan": 1, "ms": n_ms, "vhr": 1 + n_ms, "pxs": n_ms}[kind]

    def native_transform(self, kind: str) -> Any:
        with rasterio.open(self._path(kind)) as src:
            return src.transform

    def native_crs(self, kind: str) -> Any:
        with rasterio.open(self._path(kind)) as src:
            return src.crs

    def native_nodata(self) -> float | None:
        return self.nodata

    def read_native(self, kind: str, top: int, left: int, height: int, width: int) -> np.ndarray:
        """(C, height, width) float32 from row ``top``, column ``left`` of the image ``kind``, edge-padded outside it.

        ``vhr`` and ``pxs`` are on the PAN pixels: PAN + the MS bands repeated (nearest, each MS pixel
        ratio x ratio times), or the MS bands interpolated (bilinear) then pansharpened.
        """
        with rasterio.open(self._path(kind)) as src:
            arr = clip_pad(lambda win: src.read(window=win).astype(np.float32), top, left, height, width, src.height, src.width)
            if kind not in ("vhr", "pxs"):
                return arr
            with rasterio.open(self.ms) as ms:
                if kind == "vhr":
                    return np.concatenate([arr, ms_on_pan(ms, src.transform, top, left, height, width, self.nodata or 0)])
                bounds = rasterio.windows.bounds(Window(left, top, width, height), src.transform)
                mwin = rasterio.windows.from_bounds(*bounds, transform=ms.transform)
                how = Resampling.nearest if kind == "vhr" else Resampling.bilinear
                msarr = ms.read(window=mwin, out_shape=(ms.count, arr.shape[1], arr.shape[2]), boundless=True,
                                fill_value=self.nodata or 0, resampling=how).astype(np.float32)
        return pansharpen(arr[0], msarr, self.pan_fit)

    def feature_names(self) -> list[str]:
        names = [f"spot_{b}" for b in self.ms_bands]
        if {"red", "nir"} <= set(self.ms_bands):
            names.append("spot_ndvi")
        return names + list(TEXTURE)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ms_bands"], d["shift_m"], d["pan_fit"] = list(self.ms_bands), list(self.shift_m), list(self.pan_fit)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpotPair:
        return cls(**{**d, "ms_bands": tuple(d["ms_bands"]), "shift_m": tuple(d["shift_m"]), "pan_fit": tuple(d.get("pan_fit", ()))})


def find_image(path: Path, kind: str) -> str:
    """``path`` as GDAL should open it: a raster file, a ``DIM_*.XML``, or a DIMAP folder holding one.

    ``kind`` ("P" or "MS") picks the right DIM file in a bundle folder that holds both.
    """
    if path.is_file():
        return str(path)
    if not path.exists():
        raise InputMissingError(f"inputs.spot: {str(path)!r} does not exist (expected a GeoTIFF, a DIM_*.XML or a DIMAP product folder)")
    dims = sorted(p for p in path.rglob("*") if p.is_file() and p.name.upper().startswith("DIM_") and p.suffix.upper() == ".XML")
    if len(dims) > 1:
        tag = {"P": "_P_", "MS": "_MS_"}[kind]
        dims = [p for p in dims if tag in p.name.upper()] or dims
    if not dims:
        return _find_geotiff(path, kind)
    if len(dims) > 1:
        raise InputError(f"inputs.spot: several DIMAP documents in {str(path)!r}: {[p.name for p in dims]}; point at one DIM_*.XML")
    return str(dims[0])


def _find_geotiff(folder: Path, kind: str) -> str:
    """The PAN (name token P or PAN) or MS (MS or XS) GeoTIFF of a folder holding a plain pair."""
    import re

    token = re.compile(r"(^|[_\-.])(P|PAN)([_\-.]|$)" if kind == "P" else r"(^|[_\-.])(MS|XS)([_\-.]|$)", re.IGNORECASE)
    hits = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".jp2") and token.search(p.stem))
    if len(hits) != 1:
        what = "PAN (name with _PAN or _P)" if kind == "P" else "MS (name with _MS or _XS)"
        raise InputMissingError(
            f"inputs.spot: folder {str(folder)!r} holds no DIM_*.XML and {len(hits)} {what} image(s) "
            f"{[h.name for h in hits]}; give inputs.spot.pan and inputs.spot.ms explicitly")
    return str(hits[0])


def _open_header(path: str, what: str) -> dict[str, Any]:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"SPOT {what} {path!r} has no CRS; orthorectified products (ORT) are needed, not Primary ones")
            if abs(src.transform.b) > 1e-9 or abs(src.transform.d) > 1e-9:
                raise InputError(f"SPOT {what} {path!r} is rotated; resample it north-up first (gdalwarp)")
            # the first block proves the image tiles are readable (a DIM document may point at a broken JP2)
            src.read(1, window=Window(0, 0, min(16, src.width), min(16, src.height)))
            return {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height,
                    "count": src.count, "nodata": src.nodata, "bounds": src.bounds, "dtype": src.dtypes[0]}
    except RasterioIOError as exc:
        raise InputError(f"SPOT {what} {path!r} cannot be read by GDAL ({exc}); the image file may be corrupt or missing") from None


def inspect(pan: str, ms: str, ms_bands: tuple[str, ...] | None, nodata: float | None, max_shift_px: float,
            sample_px: int = 512) -> SpotPair:
    """Check the pair and measure it (see the module docstring); raises InputError on a bad pair."""
    hp, hm = _open_header(pan, "PAN"), _open_header(ms, "MS")
    if hp["count"] != 1:
        raise InputError(f"SPOT PAN {pan!r} has {hp['count']} bands; the panchromatic image has one (is it the MS image?)")
    bands = tuple(ms_bands) if ms_bands else MS_BANDS[: hm["count"]] if hm["count"] <= 4 else tuple(f"b{i}" for i in range(1, hm["count"] + 1))
    if len(bands) != hm["count"]:
        raise InputError(f"SPOT MS {ms!r} has {hm['count']} bands but inputs.spot.ms_bands names {len(bands)}: {list(bands)}")
    if hp["crs"] != hm["crs"]:
        raise InputError(f"SPOT PAN and MS are in different CRS ({hp['crs'].to_string()} vs {hm['crs'].to_string()}): {pan!r}, {ms!r}; "
                         "use the pair as delivered (same projection) or reproject one onto the other")
    pan_res, ms_res = abs(hp["transform"].a), abs(hm["transform"].a)
    ratio = ms_res / pan_res
    if ratio < 1.5 or abs(ratio - round(ratio)) > 1e-3:
        raise InputError(f"SPOT MS pixel ({ms_res:g} m) is not an integer multiple of the PAN pixel ({pan_res:g} m): "
                         f"ratio {ratio:.4f}; {ms!r} and {pan!r} are not a PAN/MS pair of one product")
    pb, mb = hp["bounds"], hm["bounds"]
    ix = min(pb.right, mb.right) - max(pb.left, mb.left)
    iy = min(pb.top, mb.top) - max(pb.bottom, mb.bottom)
    if ix <= 0 or iy <= 0:
        raise InputError(f"SPOT PAN {pan!r} ({tuple(round(v) for v in pb)}) and MS {ms!r} ({tuple(round(v) for v in mb)}) do not overlap; "
                         "they must be the two images of one acquisition")
    # MS lattice vs PAN lattice, from the headers (in PAN pixels)
    off = [((mb.left - pb.left) / pan_res) % 1, ((pb.top - mb.top) / pan_res) % 1]
    off = [min(o, 1 - o) for o in off]
    if max(off) > 0.01:
        log.warning("SPOT: the MS pixel corners are %.2f / %.2f PAN pixels off the PAN lattice (%s, %s)", off[0], off[1], ms, pan)
    nd = nodata if nodata is not None else hp["nodata"]
    pair = SpotPair(pan, ms, bands, nd, pan_res, ms_res, int(round(ratio)))
    shift, pan_fit = measure_shift(pair, sample_px)
    limit = max_shift_px * ms_res
    level = logging.WARNING if math.hypot(*shift) > limit else logging.INFO
    log.log(level, "SPOT: MS vs PAN shift measured by phase correlation: dx=%+.2f m, dy=%+.2f m (%.2f MS px)%s",
            shift[0], shift[1], math.hypot(*shift) / ms_res,
            f" > inputs.spot.max_shift_px={max_shift_px}: check the co-registration of the pair" if level == logging.WARNING else "")
    stats = {"pan": band_stats(pan, 1, nd)[0]}
    stats.update(dict(zip(bands, band_stats(ms, hm["count"], nd), strict=False)))
    return SpotPair(pan, ms, bands, nd, pan_res, ms_res, int(round(ratio)), shift, stats, pan_fit)


def band_stats(path: str, count: int, nodata: float | None, max_px: int = 512) -> list[dict[str, float]]:
    """Per-band mean, std, 2nd and 98th percentiles of a decimated read (at most max_px on a side)."""
    with rasterio.open(path) as src:
        f = max(1, math.ceil(max(src.width, src.height) / max_px))
        shape = (count, max(1, src.height // f), max(1, src.width // f))
        arr = src.read(list(range(1, count + 1)), out_shape=shape, resampling=Resampling.nearest).astype(np.float64)
    out = []
    for b in arr:
        v = b[np.isfinite(b) & ((b != nodata) if nodata is not None else True)]
        if v.size == 0:
            raise InputError(f"SPOT image {path!r}: a band holds only no-data values (nodata={nodata})")
        out.append({"mean": float(v.mean()), "std": float(v.std()), "p2": float(np.percentile(v, 2)), "p98": float(np.percentile(v, 98))})
    return out


def _phase_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(dy, dx) such that b(y, x) ~ a(y - dy, x - dx), to a tenth of a pixel (parabolic peak fit)."""
    a = (a - a.mean()) * np.hanning(a.shape[0])[:, None] * np.hanning(a.shape[1])[None]
    b = (b - b.mean()) * np.hanning(b.shape[0])[:, None] * np.hanning(b.shape[1])[None]
    cross = np.conj(np.fft.fft2(a)) * np.fft.fft2(b)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-12)).real
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)
    out = []
    for i, n, axis in ((iy, corr.shape[0], 0), (ix, corr.shape[1], 1)):
        idx = [iy, ix]
        vals = []
        for d in (-1, 0, 1):
            idx[axis] = (i + d) % n
            vals.append(corr[tuple(idx)])
        denom = vals[0] - 2 * vals[1] + vals[2]
        frac = 0.5 * (vals[0] - vals[2]) / denom if denom != 0 else 0.0
        p = i + frac
        out.append(p - n if p > n / 2 else p)
    return out[0], out[1]


def measure_shift(pair: SpotPair, sample_px: int = 512) -> tuple[tuple[float, float], tuple[float, ...]]:
    """MS - PAN displacement in metres (x east, y north), on a central window of at most sample_px MS pixels,
    and the fit of PAN on the MS bands (weights, then intercept) made on the way."""
    with rasterio.open(pair.ms) as ms, rasterio.open(pair.pan) as pan:
        b = pan.bounds
        left, bottom = max(b.left, ms.bounds.left), max(b.bottom, ms.bounds.bottom)
        right, top = min(b.right, ms.bounds.right), min(b.top, ms.bounds.top)
        n = int(min(sample_px, (right - left) / pair.ms_res, (top - bottom) / pair.ms_res))
        if n < 16:
            return (0.0, 0.0), ()
        cx, cy = (left + right) / 2, (top + bottom) / 2
        half = n * pair.ms_res / 2
        box = (cx - half, cy - half, cx + half, cy + half)
        msw = from_bounds(*box, transform=ms.transform).round_offsets().round_lengths()
        box = ms.window_bounds(msw)
        m = ms.read(window=msw, boundless=True).astype(np.float64)
        p = pan.read(1, window=from_bounds(*box, transform=pan.transform).round_offsets().round_lengths(),
                     out_shape=m.shape[1:], resampling=Resampling.average, boundless=True).astype(np.float64)
    # the PAN band is close to a linear mix of the MS bands: fit it, then correlate like with like
    design = np.column_stack([m.reshape(len(m), -1).T, np.ones(m[0].size)])
    coef, *_ = np.linalg.lstsq(design, p.ravel(), rcond=None)
    synth = (design @ coef).reshape(p.shape)
    dy, dx = _phase_correlation(p, synth)
    return (float(dx * pair.ms_res), float(-dy * pair.ms_res)), tuple(float(c) for c in coef)


def _fine_grid(grid: GridSpec, window: Window, pan_res: float) -> tuple[GridSpec, Window, int]:
    """A grid k times finer than ``grid`` (k >= 2, cells close to the PAN pixel) and ``window`` on it."""
    k = max(2, int(round(abs(grid.res[0]) / pan_res)))
    a, b, c, d, e, f = grid.transform
    fine = GridSpec(grid.crs_wkt, (a / k, b, c, d, e / k, f), grid.width * k, grid.height * k)
    return fine, Window(window.col_off * k, window.row_off * k, window.width * k, window.height * k), k


def grid_features(pair: SpotPair, grid: GridSpec, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Features (F, h, w) float32 on ``window`` of ``grid`` (names: ``pair.feature_names()``) and validity (h, w).

    Each cell only looks at the PAN pixels inside it, so tiles never need a halo.
    """
    h, w = int(window.height), int(window.width)
    nd = pair.nodata
    ms = read_on_grid(pair.ms, grid, window, Resampling.average, nodata=nd if nd is not None else 0,
                      band=list(range(1, len(pair.ms_bands) + 1))).astype(np.float32)
    valid = np.isfinite(ms).all(axis=0)
    if nd is not None:
        valid &= (ms != np.float32(nd)).all(axis=0)
    fine, fwin, k = _fine_grid(grid, window, pair.pan_res)
    pan = read_on_grid(pair.pan, fine, fwin, Resampling.nearest, nodata=nd if nd is not None else 0).astype(np.float32)
    cells = pan.reshape(h, k, w, k)
    if nd is not None:
        valid &= ~(cells == np.float32(nd)).any(axis=(1, 3))
    mean = cells.mean(axis=(1, 3))
    std = cells.std(axis=(1, 3))
    gx = np.abs(np.diff(cells, axis=3)).mean(axis=(1, 3))
    gy = np.abs(np.diff(cells, axis=1)).mean(axis=(1, 3))
    feats = [ms[i] for i in range(len(pair.ms_bands))]
    if {"red", "nir"} <= set(pair.ms_bands):
        r, n = ms[pair.ms_bands.index("red")], ms[pair.ms_bands.index("nir")]
        with np.errstate(divide="ignore", invalid="ignore"):
            feats.append(np.where(r + n != 0, (n - r) / (r + n), 0).astype(np.float32))
    feats += [mean, std, (gx + gy) / 2]
    out = np.stack(feats).astype(np.float32)
    out[:, ~valid] = np.nan
    return out, np.asarray(valid)


def clip_pad(read: Any, r0: int, c0: int, h: int, w: int, height: int, width: int) -> np.ndarray:
    """``read(window)`` of rows r0..r0+h, cols c0..c0+w of a (height x width) raster, edge-padded outside it."""
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, height), min(c0 + w, width)
    if rr1 <= rr0 or cc1 <= cc0:
        raise ConfigError("a tile lies outside the SPOT images: patch models need SPOT over the whole grid (set grid.bounds or grid.aoi inside it)")
    arr = read(Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
    pad = ((0, 0), (rr0 - r0, r0 + h - rr1), (cc0 - c0, c0 + w - cc1))
    return np.pad(arr, pad, mode="edge") if any(p for q in pad for p in q) else arr


def ms_on_pan(ms: Any, pan_transform: Any, top: int, left: int, height: int, width: int, fill: float) -> np.ndarray:
    """(C, height, width) float32: the MS pixel holding each PAN pixel's centre (``fill`` off the image).

    What GDAL's nearest resampling of the MS window onto the PAN window gives, without resampling: the
    MS rows and columns are read once at their own size and repeated by indexing (10x faster per tile).
    """
    t = ms.transform
    x = pan_transform.c + (left + np.arange(width) + 0.5) * pan_transform.a
    y = pan_transform.f + (top + np.arange(height) + 0.5) * pan_transform.e
    mc = np.floor((x - t.c) / t.a).astype(np.int64)
    mr = np.floor((y - t.f) / t.e).astype(np.int64)
    out = np.full((ms.count, height, width), fill, np.float32)
    ri = np.flatnonzero((mr >= 0) & (mr < ms.height))
    ci = np.flatnonzero((mc >= 0) & (mc < ms.width))
    if len(ri) and len(ci):  # monotone: the rows and columns inside the image are one run each
        r0, c0 = int(mr[ri[0]]), int(mc[ci[0]])
        block = ms.read(window=Window(c0, r0, int(mc[ci[-1]]) - c0 + 1, int(mr[ri[-1]]) - r0 + 1)).astype(np.float32)
        out[:, ri[0]:ri[-1] + 1, ci[0]:ci[-1] + 1] = block[:, mr[ri] - r0][:, :, mc[ci] - c0]
    return out


def pansharpen(pan: np.ndarray, ms: np.ndarray, fit: tuple[float, ...]) -> np.ndarray:
    """Component substitution: each MS band (on the PAN pixels) x PAN / synthetic PAN.

    The synthetic PAN is the ingest's least-squares fit of PAN on the MS bands, so the ratio carries
    the PAN's spatial detail and keeps each band's level (a Brovey transform with fitted weights).
    """
    if not fit:
        synth = ms.mean(axis=0)
    else:
        synth = np.tensordot(np.asarray(fit[:-1], np.float32), ms, axes=1) + np.float32(fit[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(synth > 1e-6, pan / synth, 1.0).astype(np.float32)
    return ms * np.clip(gain, 0.0, 4.0)[None]
