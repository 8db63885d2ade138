"""Raster I/O through rasterio: reading any source onto the reference grid, writing GeoTIFFs atomically."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from chain.atomic import atomic_path
from chain.errors import InputError, InputMissingError
from chain.grid import GridSpec


def open_raster(path: Path | str) -> rasterio.DatasetReader:
    """Open with a message that names the file when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"raster {str(path)!r} does not exist")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"raster {str(path)!r} cannot be read by GDAL ({gdal_reason(exc)}); is it a complete GeoTIFF? "
                         "Re-download or re-export it") from None


def same_grid(src: rasterio.DatasetReader, grid: GridSpec) -> bool:
    return (
        src.width == grid.width
        and src.height == grid.height
        and src.crs is not None
        and src.crs == grid.crs
        and src.transform.almost_equals(grid.affine, precision=1e-6)
    )


def pixel_interleaved_raw(src: rasterio.DatasetReader) -> bool:
    """An uncompressed, pixel-interleaved GeoTIFF: its blocks already hold each pixel's bands side by side."""
    from rasterio.enums import Interleaving

    return src.driver == "GTiff" and src.compression is None and src.interleaving == Interleaving.pixel


def read_window(src: rasterio.DatasetReader, window: Window, band: int | list[int]) -> np.ndarray:
    """``src.read(band, window=window)``; several bands of an uncompressed pixel-interleaved GeoTIFF come as a
    (bands, h, w) view of a pixel-major (h, w, bands) array.

    That layout is the file's own: with GTIFF_DIRECT_IO, GDAL copies the blocks' bytes without
    de-interleaving them (3.8 vs 1.5 Mpx/s for 160 float32 bands on the reference workload,
    docs/performance.md), and the forest walks pixels, so it is also the layout prediction wants.
    Compressed or band-interleaved files read faster band by band, and are.
    """
    if isinstance(band, int) or len(band) < 2 or not pixel_interleaved_raw(src):
        return src.read(band, window=window)
    h, w = int(window.height), int(window.width)
    buf = np.empty((h, w, len(band)), dtype=src.dtypes[band[0] - 1])
    with rasterio.Env(GTIFF_DIRECT_IO=True), rasterio.open(src.name) as direct:  # GDAL reads the option on opening
        direct.read(band, window=window, out=buf.transpose(2, 0, 1))
    return buf.transpose(2, 0, 1)


def pixel_major(values: np.ndarray) -> np.ndarray | None:
    """The (h * w, bands) view of a (bands, h, w) array whose memory is pixel-major, else None."""
    flat = values.transpose(1, 2, 0)
    return flat.reshape(-1, values.shape[0]) if flat.flags.c_contiguous else None


def _open_bound() -> int:
    """Files kept open between reads, by all the process's threads together: every file of a tile's series when the
    limit on open files allows (a year of S2, ~40 dates x 11 files, must fit: cycling through more files than the
    bound would reopen every one), a quarter of that limit at most."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):  # pragma: no cover - not a POSIX system
        return 256
    return 1024 if soft == resource.RLIM_INFINITY else max(16, min(1024, soft // 4))


OPEN_DATASETS = _open_bound()  # for the whole process, all threads together
_open = threading.local()
_slots = threading.Lock()
_kept = 0


class _Kept(OrderedDict):
    """A thread's open files; their slots are given back when the thread ends (dask may retire its threads)."""

    def __del__(self) -> None:
        try:
            _give_back(len(self))
        except Exception:  # pragma: no cover - the interpreter shutting down: nothing left to count
            pass


def _take_slot() -> bool:
    global _kept
    with _slots:
        if _kept < OPEN_DATASETS:
            _kept += 1
            return True
        return False


def _give_back(n: int) -> None:
    global _kept
    with _slots:
        _kept -= n


@contextmanager
def opened(path: Path | str) -> Iterator[rasterio.DatasetReader]:
    """``path`` opened, or still open from this thread's last read of the same file (same size and modification
    time): a tile of a long series reads hundreds of files, each opened again for every tile before (~1.2 ms an
    open, 5-10 % of reading a 512² window; and GDAL drops a file's cached blocks when it is closed). At most
    ``OPEN_DATASETS`` files are kept open in the process: a thread short of room closes its least recently used
    file, or keeps none. A GDAL path that is not a local file (/vsicurl/, ...) is opened each time."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        with rasterio.open(path) as src:
            yield src
        return
    key = (str(path), st.st_size, st.st_mtime_ns)
    cache: _Kept | None = getattr(_open, "datasets", None)
    if cache is None:
        cache = _open.datasets = _Kept()
    src = cache.pop(key, None)
    fresh = src is None
    if src is None:
        src = rasterio.open(path)
    try:
        yield src
    except BaseException:
        src.close()  # not kept after a failed read
        if not fresh:
            _give_back(1)
        raise
    if fresh and not _take_slot():
        if not cache:  # every slot held by other threads
            src.close()
            return
        cache.popitem(last=False)[1].close()  # its slot goes to this file
    cache[key] = src


def read_on_grid(
    path: Path | str,
    grid: GridSpec,
    window: Window,
    resampling: Resampling = Resampling.nearest,
    nodata: float | None = None,
    band: int | list[int] = 1,
) -> np.ndarray:
    """Read band(s) of ``path`` over ``window`` of ``grid``, warping on the fly when the grids differ.

    Pixels outside the source get ``nodata`` (the source's nodata when None).
    """
    try:
        with opened(path) as src:
            if same_grid(src, grid):
                return read_window(src, window, band)
            fill = nodata if nodata is not None else src.nodata
            k = lattice_factor(src, grid)
            if k is not None and (k == 1 or resampling in (Resampling.nearest, Resampling.bilinear)):
                return _read_on_lattice(src, grid, window, k, resampling, fill, band)
            with WarpedVRT(
                src,
                crs=grid.crs,
                transform=grid.affine,
                width=grid.width,
                height=grid.height,
                resampling=resampling,
                nodata=fill,
            ) as vrt:
                return vrt.read(band, window=window)
    except RasterioIOError as exc:
        raise InputError(f"raster {str(path)!r} could not be read over rows {int(window.row_off)}..{int(window.row_off + window.height)}, "
                         f"columns {int(window.col_off)}..{int(window.col_off + window.width)} of the grid ({gdal_reason(exc)}); the file "
                         "is truncated or corrupt: download or export it again") from None


def gdal_reason(exc: BaseException) -> str:
    """The most specific message GDAL gave for a failed read (rasterio's own says "see previous exception")."""
    messages, seen = [], exc
    while seen is not None:
        text = str(getattr(seen, "errmsg", "") or seen)
        if text and "previous exception" not in text:
            messages.append(text)
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return messages[-1] if messages else str(exc)


def lattice_factor(src: rasterio.DatasetReader, grid: GridSpec) -> int | None:
    """k when the source's pixels are k x k blocks of grid pixels on the same lattice (e.g. 20 m bands
    of a 10 m grid, or a neighbouring tile of the same resolution); None otherwise."""
    if src.crs is None or src.crs != grid.crs:
        return None
    st, gt = src.transform, grid.affine
    if st.b or st.d or gt.b or gt.d:
        return None
    k = st.a / gt.a
    if round(k) < 1 or abs(k - round(k)) > 1e-9 or abs(st.e / gt.e - k) > 1e-9:
        return None
    ox, oy = (st.c - gt.c) / gt.a, (st.f - gt.f) / gt.e
    if abs(ox - round(ox)) > 1e-6 or abs(oy - round(oy)) > 1e-6:
        return None
    return int(round(k))


def _read_on_lattice(src: rasterio.DatasetReader, grid: GridSpec, window: Window, k: int, resampling: Resampling,
                     fill: float | None, band: int | list[int]) -> np.ndarray:
    """What a GDAL warp to ``grid`` gives, without the warper: a window read, then numpy up-sampling.

    Bilinear ignores nodata neighbours and renormalises the weights, and gives nodata where the
    source pixel under the target centre is nodata, as GDAL's warper does (a test compares them: equal
    for 2x up-sampling, within one unit of rounding for 3x).
    """
    gt, st = grid.affine, src.transform
    rows = np.arange(int(window.row_off), int(window.row_off + window.height))
    cols = np.arange(int(window.col_off), int(window.col_off + window.width))
    # fractional source coordinates of the grid pixel centres (source pixel centres at integers)
    sy = ((gt.f + (rows + 0.5) * gt.e) - st.f) / st.e - 0.5
    sx = ((gt.c + (cols + 0.5) * gt.a) - st.c) / st.a - 0.5
    if k == 1 or resampling == Resampling.nearest:
        iy, ix = np.floor(sy + 0.5).astype(np.int64), np.floor(sx + 0.5).astype(np.int64)
        margin = 0
    else:
        iy, ix = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
        margin = 1
    r0, r1 = int(iy.min()), int(iy.max()) + margin + 1
    c0, c1 = int(ix.min()), int(ix.max()) + margin + 1
    block, ok = _padded_read(src, r0, r1, c0, c1, fill, band)  # (bands, r1-r0, c1-c0)
    if k == 1 or resampling == Resampling.nearest:
        out = block[:, (iy - r0)[:, None], (ix - c0)[None, :]]
    elif _bilinear_kernel is not None:
        # the same operations as the numpy branch below, in one compiled pass (no float64 copies of the block)
        cy = np.floor(sy + 0.5).astype(np.int64) - r0
        cx = np.floor(sx + 0.5).astype(np.int64) - c0
        out = np.empty((block.shape[0], len(iy), len(ix)), block.dtype)
        _bilinear_kernel(block, ok, ix - c0, sx - ix, iy - r0, sy - iy, cy, cx, fill if fill is not None else 0,
                         np.issubdtype(block.dtype, np.integer), out)
    else:
        # separable: along x on the source rows first, then along y (the same sums, reordered)
        wx = sx - ix
        x = ix - c0
        okf = ok.astype(np.float64)
        vals = block.astype(np.float64) * okf  # nodata contributes nothing
        num_x = vals[:, :, x] * (1 - wx) + vals[:, :, x + 1] * wx  # (bands, R, W)
        den_x = okf[:, x] * (1 - wx) + okf[:, x + 1] * wx  # (R, W)
        wy = (sy - iy)[:, None]
        y = iy - r0
        num = num_x[:, y, :] * (1 - wy) + num_x[:, y + 1, :] * wy
        den = den_x[y, :] * (1 - wy) + den_x[y + 1, :] * wy
        with np.errstate(invalid="ignore", divide="ignore"):
            val = num / den
        # GDAL's warper gives nodata where the source pixel containing the target centre is nodata
        cy = np.floor(sy + 0.5).astype(np.int64) - r0
        cx = np.floor(sx + 0.5).astype(np.int64) - c0
        empty = (den <= 0) | ~ok[cy[:, None], cx[None, :]]
        if np.issubdtype(block.dtype, np.integer):
            val = np.floor(val + 0.5)
        val[:, empty] = fill if fill is not None else 0
        out = val.astype(block.dtype)
    return out[0] if isinstance(band, int) else out


try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency
    njit = None  # type: ignore[assignment]
_bilinear_kernel = None
if njit is not None:

    @njit(cache=True, nogil=True)
    def _bilinear_all_valid(block, x, wx, y, wy, fill, is_int, num_x, out):  # type: ignore[no-untyped-def]
        """``_bilinear_kernel`` where every source pixel is valid: each ``ok`` factor is 1.0 (x * 1.0 == x, exactly),
        so a column's denominator is ``(1 - wx) + wx`` on every row and no pixel is left out: the same float64
        operations in the same order, so the same values bit for bit (tested), and an output loop over contiguous rows
        that the compiler vectorises (a 512² tile of an int16 20 m band: 1.06 against 1.66 ms, min of 15; the 16 tiles' features
        of the time-series bench in one process 9.3-10.5 s against 10.6-13.7 s, alternated three times)."""
        B, R = block.shape[0], block.shape[1]
        H, W = y.shape[0], x.shape[0]
        w0x = np.empty(W, np.float64)
        den_x = np.empty(W, np.float64)
        for j in range(W):
            w0x[j] = 1 - wx[j]
            den_x[j] = w0x[j] + wx[j]
        for b in range(B):
            for r in range(R):
                for j in range(W):
                    num_x[r, j] = np.float64(block[b, r, x[j]]) * w0x[j] + np.float64(block[b, r, x[j] + 1]) * wx[j]
            for i in range(H):
                w1 = wy[i]
                w0 = 1 - w1
                top, bottom, row = num_x[y[i]], num_x[y[i] + 1], out[b, i]
                for j in range(W):
                    den = den_x[j] * w0 + den_x[j] * w1
                    val = (top[j] * w0 + bottom[j] * w1) / den
                    if is_int:
                        val = np.floor(val + 0.5)
                    row[j] = val if den > 0 else fill

    @njit(cache=True, nogil=True)
    def _bilinear_kernel(block, ok, x, wx, y, wy, cy, cx, fill, is_int, out):  # type: ignore[no-untyped-def]
        B, R = block.shape[0], block.shape[1]
        H, W = y.shape[0], x.shape[0]
        num_x = np.empty((R, W), np.float64)
        if ok.all():  # no nodata under the window (the common case): the same sums, fewer terms
            _bilinear_all_valid(block, x, wx, y, wy, fill, is_int, num_x, out)
            return
        den_x = np.empty((R, W), np.float64)
        for r in range(R):
            for j in range(W):
                den_x[r, j] = np.float64(ok[r, x[j]]) * (1 - wx[j]) + np.float64(ok[r, x[j] + 1]) * wx[j]
        for b in range(B):
            for r in range(R):
                for j in range(W):
                    v0 = np.float64(block[b, r, x[j]]) * np.float64(ok[r, x[j]])  # nodata contributes nothing
                    v1 = np.float64(block[b, r, x[j] + 1]) * np.float64(ok[r, x[j] + 1])
                    num_x[r, j] = v0 * (1 - wx[j]) + v1 * wx[j]
            for i in range(H):
                yi, w1 = y[i], wy[i]
                w0 = 1 - w1
                for j in range(W):
                    den = den_x[yi, j] * w0 + den_x[yi + 1, j] * w1
                    if den <= 0 or not ok[cy[i], cx[j]]:
                        out[b, i, j] = fill
                        continue
                    val = (num_x[yi, j] * w0 + num_x[yi + 1, j] * w1) / den
                    out[b, i, j] = np.floor(val + 0.5) if is_int else val


def _padded_read(src: rasterio.DatasetReader, r0: int, r1: int, c0: int, c1: int, fill: float | None,
                 band: int | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows r0:r1, cols c0:c1 of the source (may reach outside it: filled) and where it holds data."""
    bands = [band] if isinstance(band, int) else list(band)
    dtype = np.dtype(src.dtypes[bands[0] - 1])
    out = np.full((len(bands), r1 - r0, c1 - c0), fill if fill is not None else 0, dtype=dtype)
    ok = np.zeros((r1 - r0, c1 - c0), bool)
    rr0, rr1 = max(r0, 0), min(r1, src.height)
    cc0, cc1 = max(c0, 0), min(c1, src.width)
    if rr0 < rr1 and cc0 < cc1:
        data = src.read(bands, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
        out[:, rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = data
        inside = np.ones(data.shape[1:], bool)
        if src.nodata is not None:
            inside &= ~(data == src.nodata).any(axis=0)
        if data.dtype.kind == "f":
            inside &= np.isfinite(data).all(axis=0)
        ok[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = inside
    return out, ok


def tile_profile(grid: GridSpec, window: Window, dtype: str, nodata: float | None, count: int = 1) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "dtype": dtype,
        "count": count,
        "width": int(window.width),
        "height": int(window.height),
        "crs": grid.crs,
        "transform": grid.window_transform(window),
        "nodata": nodata,
        "compress": "deflate",
        "tiled": window.width >= 16 and window.height >= 16 and window.width % 16 == 0 and window.height % 16 == 0,
    }


def write_tile(path: Path, data: np.ndarray, grid: GridSpec, window: Window, nodata: float | None,
               descriptions: list[str] | None = None) -> None:
    """Write a (bands, h, w) or (h, w) array as a GeoTIFF covering ``window`` of ``grid``, atomically."""
    arr = data[None] if data.ndim == 2 else data
    profile = tile_profile(grid, window, arr.dtype.name, nodata, arr.shape[0])
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            for i, d in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, d)


# A palette for classes without a colour in the config: distinct, and readable on a map.
DEFAULT_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
]


def parse_color(value: Any) -> tuple[int, int, int]:
    """``#RRGGBB``, a colour name (CSS / matplotlib: "red", "darkgreen", "tab:blue") or [r, g, b] -> (r, g, b)."""
    if isinstance(value, str):
        v = value.strip()
        if v.startswith("#") or len(v) == 6 and all(ch in "0123456789abcdefABCDEF" for ch in v):
            hexa = v.lstrip("#")
            if len(hexa) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in hexa):
                raise ValueError(f"colour {value!r} is not #RRGGBB")
            return int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16)
        from matplotlib.colors import to_rgb

        try:
            rgb = to_rgb(v)
        except ValueError:
            raise ValueError(f"colour {value!r} is neither #RRGGBB nor a colour name (e.g. red, darkgreen, tab:blue)") from None
        return int(round(rgb[0] * 255)), int(round(rgb[1] * 255)), int(round(rgb[2] * 255))
    r, g, b = (int(x) for x in value)
    return r, g, b
