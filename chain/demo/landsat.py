"""The demo's Landsat 8/9 Collection 2 Level-2 series, in the USGS layout, for the same ground truth.

One look every 8 days (Landsat 8 and 9 alternate on a 16-day repeat), with its own clouds. Each
product ``L{C08,C09}_L2SP_151074_<date>_<processed>_02_T1`` holds ``_SR_B1..B7.TIF`` (uint16,
30 m, DN = (reflectance + 0.2) / 2.75e-05, 0 = fill), ``_QA_PIXEL.TIF`` (CFMask bit flags, as
USGS sets them for clear land, water, cloud and shadow) and ``_MTL.txt``. Every third product is
written as the ``.tar`` archive USGS delivers, the others as extracted folders. One date in six
loses a swath edge (fill).
"""

from __future__ import annotations

import datetime as dt
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine

from chain.atomic import atomic_path
from chain.demo.scene import ORIGIN, RES, observe, write_geotiff

if TYPE_CHECKING:
    from chain.demo.scene import Scene

PATH_ROW = "151074"
SCALE, OFFSET = 2.75e-05, -0.2
# OLI bands from the scene's S2 spectra (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12): coastal ~ blue, NIR ~ B8A
OLI_FROM_S2 = {"B1": 0, "B2": 0, "B3": 1, "B4": 2, "B5": 7, "B6": 8, "B7": 9}
LOW = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)  # low cloud, shadow, snow and cirrus confidence
CLEAR, WATER = (1 << 6) | LOW, (1 << 6) | (1 << 7) | LOW  # 21824 and 21952, as in real products
CLOUD = (1 << 1) | (1 << 3) | (3 << 8) | (1 << 10) | (1 << 12) | (1 << 14)
SHADOW = (1 << 4) | (1 << 8) | (3 << 10) | (1 << 12) | (1 << 14)
FILL = 1

MTL = """GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    ORIGIN = "Image courtesy of the U.S. Geological Survey"
    LANDSAT_PRODUCT_ID = "{pid}"
    PROCESSING_LEVEL = "L2SP"
    COLLECTION_NUMBER = 02
    COLLECTION_CATEGORY = "T1"
    OUTPUT_FORMAT = "GEOTIFF"
{files}
    FILE_NAME_QUALITY_L1_PIXEL = "{pid}_QA_PIXEL.TIF"
    FILE_NAME_METADATA_ODL = "{pid}_MTL.txt"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "LANDSAT_{sat}"
    SENSOR_ID = "OLI_TIRS"
    WRS_TYPE = 2
    WRS_PATH = {path}
    WRS_ROW = {row}
    DATE_ACQUIRED = {date}
    SCENE_CENTER_TIME = "06:31:12.3456780Z"
    CLOUD_COVER = {cloud:.2f}
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
{params}
  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
END_GROUP = LANDSAT_METADATA_FILE
END
"""


def _to_30m(a: np.ndarray, n: int, reduce: str = "mean") -> np.ndarray:
    """(H, W, ...) at 10 m -> (n, n, ...) at 30 m (edge-padded to 3 n first)."""
    pad = 3 * n - a.shape[0]
    a = np.pad(a, [(0, pad), (0, pad)] + [(0, 0)] * (a.ndim - 2), mode="edge")
    blocks = a.reshape(n, 3, n, 3, *a.shape[2:])
    return blocks.mean(axis=(1, 3)) if reduce == "mean" else blocks.max(axis=(1, 3))


def write_series(folder: Path, scene: Scene, rng: np.random.Generator, year: int) -> None:
    n = int(np.ceil(scene.size / 3))
    t30 = Affine(3 * RES, 0, ORIGIN[0], 0, -3 * RES, ORIGIN[1])
    water = _to_30m((scene.code[scene.ids] == 6).astype(np.float32), n) > 0.5
    first = dt.date(year, 1, 1) + dt.timedelta(days=int(rng.integers(0, 8)))
    k = 0
    while (date := first + dt.timedelta(days=8 * k)).year == year:
        refl, mask = observe(scene, rng, date.timetuple().tm_yday)
        sr = _to_30m(refl.astype(np.float32), n)
        cloud = _to_30m((mask == 1).astype(np.uint8), n, "max") > 0
        shadow = _to_30m((mask == 2).astype(np.uint8), n, "max") > 0
        qa = np.where(cloud, CLOUD, np.where(shadow, SHADOW, np.where(water, WATER, CLEAR))).astype(np.uint16)
        fill = np.zeros((n, n), bool)
        if rng.random() < 1 / 6:  # the edge of the swath
            yy, xx = np.mgrid[0:n, 0:n]
            fill = xx - 0.3 * yy > rng.uniform(0.7, 1.0) * n
        qa[fill] = FILL
        sat = 8 if k % 2 == 0 else 9
        pid = f"LC0{sat}_L2SP_{PATH_ROW}_{date:%Y%m%d}_{date + dt.timedelta(days=20):%Y%m%d}_02_T1"
        product = folder / pid
        for band, idx in OLI_FROM_S2.items():
            r = sr[..., idx] * (0.95 if band == "B1" else 1.0)
            dn = np.clip(np.rint((r - OFFSET) / SCALE), 1, 65455).astype(np.uint16)
            dn[fill] = 0
            write_geotiff(product / f"{pid}_SR_{band}.TIF", dn, t30, 0)
        write_geotiff(product / f"{pid}_QA_PIXEL.TIF", qa, t30, 1)
        files = "\n".join(f'    FILE_NAME_BAND_{b[1:]} = "{pid}_SR_{b}.TIF"' for b in OLI_FROM_S2)
        params = "\n".join(f"    REFLECTANCE_MULT_BAND_{b[1:]} = 2.75E-05\n    REFLECTANCE_ADD_BAND_{b[1:]} = -0.200000" for b in OLI_FROM_S2)
        (product / f"{pid}_MTL.txt").write_text(MTL.format(pid=pid, files=files, sat=sat, path=int(PATH_ROW[:3]),
                                                           row=int(PATH_ROW[3:]), date=date.isoformat(),
                                                           cloud=100 * float(cloud.mean()), params=params))
        if k % 3 == 2:
            _to_tar(product)
        k += 1


def _to_tar(product: Path) -> None:
    """Replace a product folder by the flat .tar USGS delivers."""
    import shutil

    with atomic_path(product.with_suffix(".tar")) as tmp:
        with tarfile.open(tmp, "w") as tar:
            for f in sorted(product.iterdir()):
                tar.add(f, arcname=f.name)
    shutil.rmtree(product)
