"""The demo's SPOT-6/7-like PAN (1.5 m) + MS (6 m) pair, and a DIMAP v2 writer for it.

Textures carry class information that one date of spectra does not: sugarcane in planting rows,
market gardening in beds, forest as tree crowns with shadows, the town as roofs and streets,
pasture, bare soil and water smooth. Written as a SPOT delivery (DIMAP v2 documents with TIFF or
JP2 image tiles, two tiles per image, the way GDAL's DIMAP driver reads them) or as a GeoTIFF pair.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from scipy import ndimage

from chain.atomic import atomic_path

PAN_RES, MS_RES = 1.5, 6.0
MS_IDX = [0, 1, 2, 6]  # B2 B3 B4 B8 of the demo's S2 spectra: blue, green, red, NIR
PAN_MIX = np.array([0.2, 0.35, 0.35, 0.1], np.float32)  # the PAN band as a mix of the MS bands
DN_GAIN = 4000.0  # 12-bit digital numbers: DN = reflectance x 4000 (+1 so that 0 stays no data)


def _texture(code: np.ndarray, fid: np.ndarray, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator,
             n_fields: int) -> tuple[np.ndarray, np.ndarray]:
    """(cover multiplier, brightness multiplier) per PAN pixel."""
    angle = rng.uniform(0, np.pi, n_fields).astype(np.float32)[fid]
    along = xx * np.cos(angle) + yy * np.sin(angle)
    cover = np.ones(code.shape, np.float32)
    bright = np.ones(code.shape, np.float32)
    rows = 0.5 + 0.5 * np.sin(2 * np.pi * along / 4.5)  # sugarcane rows every 4.5 m
    cover = np.where(code == 1, 0.35 + 0.75 * rows, cover)
    beds = (np.floor(along / 3.0) % 2).astype(np.float32)  # market-gardening beds, 3 m wide
    cover = np.where(code == 4, 0.2 + 1.2 * beds, cover)
    bright = np.where(code == 4, 0.75 + 0.5 * beds, bright)  # ridges and shadowed furrows, even when bare
    crowns = ndimage.gaussian_filter(rng.standard_normal(code.shape).astype(np.float32), 2.0)
    crowns = crowns / crowns.std()
    cover = np.where(code == 3, np.clip(0.8 + 0.35 * crowns, 0.2, 1.3), cover)
    bright = np.where(code == 3, np.clip(1.0 + 0.45 * crowns, 0.3, 1.8), bright)
    # the town: 18 m blocks of roofs of random brightness, 4 m streets between them
    bx, by = np.floor(xx / 18.0).astype(np.int64), np.floor(yy / 18.0).astype(np.int64)
    roof = 0.6 + 0.9 * ((bx * 7919 + by * 104729) % 97) / 96.0
    street = ((xx % 18.0) < 4.0) | ((yy % 18.0) < 4.0)
    bright = np.where(code == 5, np.where(street, 0.45, roof).astype(np.float32), bright)
    return cover, bright


# small objects (demo.small_objects): code -> (name, colour, spectrum of B2 B3 B4 B8 x brightness)
SMALL_CLASSES = {10: ("isolated tree", (0, 70, 20)), 11: ("hut", (250, 90, 210))}
SMALL_SPECTRA = {10: np.array([0.025, 0.05, 0.025, 0.34], np.float32) * 0.8,  # a crown, its shadow darkening it a little
                 11: np.array([0.13, 0.14, 0.15, 0.195], np.float32) * 1.3}  # a roof, a little brighter than the town's
HOST_CLASSES = (1, 2, 4, 7)  # small objects stand in sugarcane, pasture, market gardens and bare soil


def field_ids(fields: Any, extent_m: float, origin: tuple[float, float]) -> np.ndarray:
    """(H, W) index of the field of each PAN pixel (the pair's PAN lattice)."""
    n = int(np.ceil(extent_m / MS_RES)) * int(MS_RES / PAN_RES)
    t_pan = Affine(PAN_RES, 0, origin[0], 0, -PAN_RES, origin[1])
    return rasterize(((g, i) for i, g in enumerate(fields.geometry)), out_shape=(n, n), transform=t_pan, fill=0, dtype="int32")


def place_small_objects(fid: np.ndarray, code: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(k, 4) int rows of (row, col, size, class) in PAN pixels: 2-4 px squares of isolated trees and huts, each with a
    ring of 2 px of one host field of a contrasting class around it, never touching another (k <= n: the draws that fit)."""
    taken = np.zeros(fid.shape, bool)
    out: list[tuple[int, int, int, int]] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        s = int(rng.integers(2, 5))
        r, c = int(rng.integers(2, fid.shape[0] - s - 2)), int(rng.integers(2, fid.shape[1] - s - 2))
        ring = (slice(r - 2, r + s + 2), slice(c - 2, c + s + 2))
        host = fid[ring]
        if (host != host[0, 0]).any() or code[host[0, 0]] not in HOST_CLASSES or taken[ring].any():
            continue
        taken[ring] = True
        out.append((r, c, s, 10 + len(out) % 2))
    return np.asarray(out, np.int64).reshape(-1, 4)


def make_pair(fields: Any, code: np.ndarray, phase: np.ndarray, vigour: np.ndarray, background: np.ndarray,
              leaf: np.ndarray, origin: tuple[float, float], extent_m: float, doy: int, seed: int,
              cover_fn: Any, small: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Affine, Affine]:
    """(PAN (H, W) uint16, MS (4, H/4, W/4) uint16, PAN transform, MS transform) covering ``extent_m``; ``small``: the
    small objects (``place_small_objects``) painted over the fields, with their own spectra."""
    rng = np.random.default_rng([seed, 6])
    n_ms = int(np.ceil(extent_m / MS_RES))
    ratio = int(MS_RES / PAN_RES)
    n = n_ms * ratio
    x0, y0 = origin
    t_pan = Affine(PAN_RES, 0, x0, 0, -PAN_RES, y0)
    t_ms = Affine(MS_RES, 0, x0, 0, -MS_RES, y0)
    fid = rasterize(((g, i) for i, g in enumerate(fields.geometry)), out_shape=(n, n), transform=t_pan, fill=0, dtype="int32")
    c = code[fid]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) * np.float32(PAN_RES)
    cover_mult, bright = _texture(c, fid, xx, yy, rng, len(code))
    del xx, yy
    f = np.clip(cover_fn(code, doy, phase, vigour)[fid] * cover_mult, 0, 1).astype(np.float32)
    del cover_mult
    refl = np.empty((4, n, n), np.float32)
    for k, b in enumerate(MS_IDX):
        refl[k] = (f * leaf[fid, b] + (1 - f) * background[fid, b]) * bright
    del f, bright, fid
    for r, c, s, k in small if small is not None else []:
        refl[:, r:r + s, c:c + s] = SMALL_SPECTRA[int(k)][:, None, None] * rng.uniform(0.85, 1.15)
    pan = np.tensordot(PAN_MIX, refl, axes=1) + rng.normal(0, 0.003, (n, n)).astype(np.float32)
    ms = refl.reshape(4, n_ms, ratio, n_ms, ratio).mean(axis=(2, 4)) + rng.normal(0, 0.002, (4, n_ms, n_ms)).astype(np.float32)
    to_dn = lambda a: np.clip(np.rint(a * DN_GAIN) + 1, 1, 4095).astype(np.uint16)  # noqa: E731
    return to_dn(pan), to_dn(ms), t_pan, t_ms


def _write_tif(path: Path, arr: np.ndarray, transform: Affine, epsg: int, driver: str = "GTiff") -> None:
    arr = arr if arr.ndim == 3 else arr[None]
    profile = {"driver": "GTiff", "dtype": arr.dtype.name, "count": arr.shape[0], "width": arr.shape[2], "height": arr.shape[1],
               "crs": CRS.from_epsg(epsg), "transform": transform, "nodata": 0, "compress": "deflate", "predictor": 2,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "interleave": "pixel" if arr.shape[0] > 1 else "band"}
    path.parent.mkdir(parents=True, exist_ok=True)
    if driver == "GTiff":
        with atomic_path(path) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr)
        return
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    with MemoryFile() as mem:
        with mem.open(**{k: v for k, v in profile.items() if k not in ("compress", "predictor", "tiled", "blockxsize", "blockysize", "interleave")}) as ds:
            ds.write(arr)
        with mem.open() as ds, atomic_path(path) as tmp:
            rio_copy(ds, tmp, driver="JP2OpenJPEG", QUALITY="100", REVERSIBLE="YES")


DIM = """<?xml version="1.0" encoding="UTF-8"?>
<Dimap_Document name="{doc}">
  <Metadata_Identification>
    <METADATA_FORMAT version="2.0">DIMAP</METADATA_FORMAT>
    <METADATA_PROFILE>S6_ORTHO</METADATA_PROFILE>
  </Metadata_Identification>
  <Dataset_Identification><DATASET_NAME>{name}</DATASET_NAME></Dataset_Identification>
  <Dataset_Sources><Source_Identification><Strip_Source>
    <MISSION>SPOT</MISSION><MISSION_INDEX>6</MISSION_INDEX><INSTRUMENT>NAOMI</INSTRUMENT>
    <IMAGING_DATE>{date}</IMAGING_DATE><IMAGING_TIME>06:32:41.5Z</IMAGING_TIME>
  </Strip_Source></Source_Identification></Dataset_Sources>
  <Coordinate_Reference_System>
    <Projected_CRS><PROJECTED_CRS_CODE>urn:ogc:def:crs:EPSG::{epsg}</PROJECTED_CRS_CODE></Projected_CRS>
  </Coordinate_Reference_System>
  <Geoposition><Geoposition_Insert>
    <ULXMAP unit="m">{ulx}</ULXMAP><ULYMAP unit="m">{uly}</ULYMAP><XDIM unit="m">{res}</XDIM><YDIM unit="m">{res}</YDIM>
  </Geoposition_Insert></Geoposition>
  <Processing_Information><Product_Settings>
    <PROCESSING_LEVEL>ORTHO</PROCESSING_LEVEL><SPECTRAL_PROCESSING>{spectral}</SPECTRAL_PROCESSING>
  </Product_Settings></Processing_Information>
  <Raster_Data>
    <Data_Access>
      <DATA_FILE_ORGANISATION>BAND_COMPOSITE</DATA_FILE_ORGANISATION>
      <DATA_FILE_FORMAT>{mime}</DATA_FILE_FORMAT>
      <Data_Files>
{files}
      </Data_Files>
    </Data_Access>
    <Raster_Dimensions>
      <NROWS>{rows}</NROWS><NCOLS>{cols}</NCOLS><NBANDS>{bands}</NBANDS>
      <Tile_Set><NTILES>{ntiles}</NTILES><Regular_Tiling>
        <NTILES_SIZE nrows="{rows}" ncols="{tile_cols}"/><NTILES_COUNT ntiles_R="1" ntiles_C="{ntiles}"/>
        <OVERLAP_ROW>0</OVERLAP_ROW><OVERLAP_COL>0</OVERLAP_COL>
      </Regular_Tiling></Tile_Set>
    </Raster_Dimensions>
    <Raster_Encoding><DATA_TYPE>INTEGER</DATA_TYPE><NBITS>12</NBITS><SIGN>UNSIGNED</SIGN></Raster_Encoding>
  </Raster_Data>
  <Radiometric_Data><Radiometric_Calibration><Instrument_Calibration><Band_Measurement_List>
{radiance}
  </Band_Measurement_List></Instrument_Calibration></Radiometric_Calibration></Radiometric_Data>
</Dimap_Document>
"""


def write_dimap(folder: Path, arr: np.ndarray, transform: Affine, epsg: int, date: dt.date, kind: str, jp2: bool) -> Path:
    """One DIMAP v2 image product (``IMG_SPOT6_<kind>_001_A/DIM_*.XML`` + two image tiles); returns the DIM path."""
    arr = arr if arr.ndim == 3 else arr[None]
    bands, rows, cols = arr.shape
    stamp = f"{date:%Y%m%d}063241"
    name = f"SPOT6_{kind}_{stamp}_ORT_5812345101"
    product = folder / f"IMG_SPOT6_{kind}_001_A"
    tile_cols = (cols + 1) // 2
    ext = "JP2" if jp2 else "TIF"
    entries = []
    for c in range(2):
        part = arr[:, :, c * tile_cols:(c + 1) * tile_cols]
        fname = f"IMG_{name}_R1C{c + 1}.{ext}"
        _write_tif(product / fname, part, transform * Affine.translation(c * tile_cols, 0), epsg,
                   "JP2OpenJPEG" if jp2 else "GTiff")
        entries.append(f'        <Data_File tile_R="1" tile_C="{c + 1}"><DATA_FILE_PATH href="{fname}"/></Data_File>')
    ids = ["P"] if kind == "P" else ["B0", "B1", "B2", "B3"]
    radiance = "\n".join(f"    <Band_Radiance><BAND_ID>{b}</BAND_ID><GAIN>{DN_GAIN / 400:.2f}</GAIN><BIAS>0</BIAS></Band_Radiance>" for b in ids)
    dim = product / f"DIM_{name}.XML"
    dim.write_text(DIM.format(doc=dim.name, name=name, date=date.isoformat(), epsg=epsg, ulx=transform.c, uly=transform.f,
                              res=transform.a, spectral="PAN" if kind == "P" else "MS", mime="image/jp2" if jp2 else "image/tiff",
                              files="\n".join(entries), rows=rows, cols=cols, bands=bands, ntiles=2, tile_cols=tile_cols,
                              radiance=radiance))
    return dim


def write_pair(out: Path, pan: np.ndarray, ms: np.ndarray, t_pan: Affine, t_ms: Affine, epsg: int, date: dt.date,
               layout: str) -> None:
    """``layout``: dimap (TIFF tiles), dimap_jp2 or geotiff (``PAN.tif`` + ``MS.tif``)."""
    if layout == "geotiff":
        _write_tif(out / f"SPOT6_{date:%Y%m%d}_PAN.tif", pan, t_pan, epsg)
        _write_tif(out / f"SPOT6_{date:%Y%m%d}_MS.tif", ms, t_ms, epsg)
        return
    volume = out / "PROD_SPOT6_001" / "VOL_SPOT6_001_A"
    for kind, arr, t in (("P", pan, t_pan), ("MS", ms, t_ms)):
        write_dimap(volume, arr, t, epsg, date, kind, jp2=layout == "dimap_jp2")
