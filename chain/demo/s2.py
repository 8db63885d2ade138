"""The demo's Sentinel-2 series as products: one folder per date, THEIA L2A or Sen2Cor L2A (folders or zips)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from chain.atomic import atomic_path
from chain.demo.scene import BANDS_20M, CRS_EPSG, NODATA, write_geotiff
from chain.sources.sentinel2 import S2_BANDS


def write_folders(s2: Path, date: dt.date, bands: dict[str, np.ndarray], mask: np.ndarray, t10: Affine, t20: Affine) -> None:
    """One folder per date: ``DEMO_<YYYYMMDD>_<BAND>.tif`` (20 m bands at 20 m) and ``DEMO_<YYYYMMDD>_MASK.tif``."""
    folder = s2 / f"{date:%Y%m%d}"
    for band, arr in bands.items():
        write_geotiff(folder / f"DEMO_{date:%Y%m%d}_{band}.tif", arr, t20 if band in BANDS_20M else t10, NODATA)
    write_geotiff(folder / f"DEMO_{date:%Y%m%d}_MASK.tif", mask, t10, None)


def write_date(s2: Path, layout: str, s2_tiles: int, date: dt.date, dn: np.ndarray, mask: np.ndarray, t10: Affine,
               t20: Affine) -> None:
    """Write one date's (H, W, 10) int16 DN and mask as ``layout`` (cut into two overlapping tiles when asked)."""
    size = dn.shape[0]
    bands = {}
    for b, band in enumerate(S2_BANDS):
        arr = dn[..., b]
        if band in BANDS_20M:
            blocks = arr.reshape(size // 2, 2, size // 2, 2)
            nod = (blocks == NODATA).any(axis=(1, 3))
            arr = np.where(nod, NODATA, np.rint(blocks.mean(axis=(1, 3), dtype=np.float32))).astype(np.int16)
        bands[band] = arr
    if layout == "folders":
        write_folders(s2, date, bands, mask, t10, t20)
        return
    cut = (size * 2 // 5) // 2 * 2, (size * 3 // 5) // 2 * 2  # even: the 20 m bands split too
    parts = [("40KCB", 0, size)] if s2_tiles == 1 else [("40KCB", 0, cut[1]), ("40KDB", cut[0], size)]
    writer = _write_theia if layout.startswith("theia") else _write_sen2cor
    for tile, c0, c1 in parts:
        sub = {b: a[:, c0 // 2:c1 // 2] if b in BANDS_20M else a[:, c0:c1] for b, a in bands.items()}
        writer(s2, date, sub, mask[:, c0:c1], dn[:, c0:c1, 0] == NODATA, t10 * Affine.translation(c0, 0),
               t20 * Affine.translation(c0 // 2, 0), zipped=layout.endswith("_zip"), tile=tile)


def _zip_product(folder: Path, archive: Path) -> None:
    """Replace a product folder by a zip holding it (as products are delivered)."""
    import shutil
    import zipfile

    with atomic_path(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for f in sorted(folder.rglob("*")):
                z.write(f, f"{folder.name}/{f.relative_to(folder)}")
    shutil.rmtree(folder)


def _write_theia(s2: Path, date: dt.date, bands: dict[str, np.ndarray], mask: np.ndarray, nodata: np.ndarray,
                 t10: Affine, t20: Affine, zipped: bool, tile: str = "40KCB") -> None:
    """One THEIA L2A product: FRE bands, MASKS/ CLM (bit field), EDG, SAT at R1 (10 m) and R2 (20 m)."""
    name = f"SENTINEL2{'AB'[date.toordinal() % 2]}_{date:%Y%m%d}-065412-457_L2A_T{tile}_C_V2-2"
    folder = s2 / name
    for band, arr in bands.items():
        write_geotiff(folder / f"{name}_FRE_{band}.tif", arr, t20 if band in BANDS_20M else t10, NODATA)
    # CLM bits: 0 = clouds or shadows, 1 = clouds, 2 = shadows of detected clouds
    clm = np.where(mask == 1, 0b011, np.where(mask == 2, 0b101, 0)).astype(np.uint8)
    edg = nodata.astype(np.uint8)
    h, w = mask.shape
    half = lambda a: a.reshape(h // 2, 2, w // 2, 2).max(axis=(1, 3))  # noqa: E731
    for kind, r1 in (("CLM", clm), ("EDG", edg), ("SAT", np.zeros_like(clm))):
        write_geotiff(folder / "MASKS" / f"{name}_{kind}_R1.tif", r1, t10, None)
        write_geotiff(folder / "MASKS" / f"{name}_{kind}_R2.tif", half(r1), t20, None)
    if zipped:
        _zip_product(folder, s2 / f"{name}.zip")


MTD = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE></Product_Info>
    <Product_Image_Characteristics>
      <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>
{offsets}
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""


def _write_jp2(path: Path, arr: np.ndarray, transform: Affine) -> None:
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    profile = {"driver": "GTiff", "dtype": arr.dtype.name, "count": 1, "width": arr.shape[1], "height": arr.shape[0],
               "crs": CRS.from_epsg(CRS_EPSG), "transform": transform}
    path.parent.mkdir(parents=True, exist_ok=True)
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(arr, 1)
        with mem.open() as ds:
            with atomic_path(path) as tmp:
                rio_copy(ds, tmp, driver="JP2OpenJPEG", QUALITY="100", REVERSIBLE="YES")


def _write_sen2cor(s2: Path, date: dt.date, bands: dict[str, np.ndarray], mask: np.ndarray, nodata: np.ndarray,
                   t10: Affine, t20: Affine, zipped: bool, tile: str = "40KCB") -> None:
    """One Sen2Cor L2A .SAFE: JP2 bands at 10/20 m, SCL at 20 m, MTD_MSIL2A.xml with the BOA offsets.

    Every other date uses processing baseline 04.00 (DN = reflectance x 10000 + 1000), the others
    02.14 (no offset), so both conventions are exercised.
    """
    new = date.toordinal() % 2 == 0
    baseline = "0400" if new else "0214"
    stamp = f"{date:%Y%m%d}T063509"
    name = f"S2{'AB'[date.toordinal() % 2]}_MSIL2A_{stamp}_N{baseline}_R134_T{tile}_{date:%Y%m%d}T084512"
    safe = s2 / f"{name}.SAFE"
    img = safe / "GRANULE" / f"L2A_T{tile}_A029000_{stamp}" / "IMG_DATA"
    for band, arr in bands.items():
        dn = np.where(arr == NODATA, 0, arr.astype(np.int32) + (1000 if new else 0)).astype(np.uint16)
        res = "20m" if band in BANDS_20M else "10m"
        fname = band if band.endswith("A") else f"B{int(band[1:]):02d}"
        _write_jp2(img / f"R{res}" / f"T{tile}_{stamp}_{fname}_{res}.jp2", dn, t20 if res == "20m" else t10)
    h, w = mask.shape
    blocks = lambda a: a.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))  # noqa: E731
    scl = np.full((h // 2, w // 2), 4, np.uint8)  # 4 = vegetation: usable
    scl[blocks(mask == 2)] = 3  # cloud shadow
    scl[blocks(mask == 1)] = 9  # cloud, high probability
    scl[blocks(nodata)] = 0  # no data
    _write_jp2(img / "R20m" / f"T{tile}_{stamp}_SCL_20m.jp2", scl, t20)
    offsets = ""
    if new:
        offsets = ("      <BOA_ADD_OFFSET_VALUES_LIST>" + "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
                   + "</BOA_ADD_OFFSET_VALUES_LIST>")
    (safe / "MTD_MSIL2A.xml").write_text(MTD.format(baseline=f"{baseline[:2]}.{baseline[2:]}", offsets=offsets))
    if zipped:
        _zip_product(safe, s2 / f"{name}.zip")


