"""A very-high-resolution scene of any size for the object-based tests and bench: a SPOT-like 4-band image
(blue, green, red, NIR; uint16 DN) of Voronoi fields, written block by block, with reference polygons.

Each field has a class (its spectrum), its own brightness offset and pixel noise, so that objects are
fields and a segmentation has something to find. Memory: one block of ``block`` x ``block`` pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chain.demo.scene import CLASSES, CRS_EPSG

# per class: blue, green, red, NIR reflectance of the VHR image (a mid-season date)
SPECTRA = {1: (0.04, 0.08, 0.05, 0.40), 2: (0.03, 0.05, 0.03, 0.30), 3: (0.06, 0.10, 0.08, 0.35), 4: (0.07, 0.10, 0.10, 0.28),
           5: (0.12, 0.13, 0.15, 0.20), 6: (0.05, 0.04, 0.03, 0.02), 7: (0.15, 0.17, 0.20, 0.25)}


def write_vhr_scene(out: Path, size_px: int = 512, res_m: float = 1.5, n_fields: int = 60, seed: int = 0,
                    noise: float = 0.012, block: int = 2048, reference_share: float = 0.5) -> Path:
    """``out/vhr.tif`` (4 bands, named) and ``out/reference.gpkg`` (a share of the fields, shrunk by 2 pixels,
    with ``code`` and ``name``); returns ``out``."""
    import geopandas as gpd
    import rasterio
    import shapely
    from affine import Affine
    from rasterio.crs import CRS
    from scipy.spatial import cKDTree
    from shapely import affinity

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    extent = size_px * res_m
    x0, y0 = 500000.0, 7650000.0
    pts = rng.uniform(0, extent, (n_fields, 2))
    codes = rng.choice(list(SPECTRA), n_fields)
    offset = rng.normal(0, 0.01, (n_fields, 4))
    spectra = np.array([SPECTRA[int(c)] for c in codes]) + offset
    tree = cKDTree(pts)
    transform = Affine(res_m, 0, x0, 0, -res_m, y0 + extent)
    profile = {"driver": "GTiff", "dtype": "uint16", "count": 4, "width": size_px, "height": size_px, "crs": CRS.from_epsg(CRS_EPSG),
               "transform": transform, "nodata": 0, "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "BIGTIFF": "IF_SAFER"}
    with rasterio.open(out / "vhr.tif", "w", **profile) as dst:
        for r0 in range(0, size_px, block):
            for c0 in range(0, size_px, block):
                h, w = min(block, size_px - r0), min(block, size_px - c0)
                yy, xx = np.mgrid[r0:r0 + h, c0:c0 + w]
                # pixel centres in scene metres from the lower left (y up), as the field seeds
                _, field = tree.query(np.c_[(xx.ravel() + 0.5) * res_m, extent - (yy.ravel() + 0.5) * res_m])
                refl = spectra[field].T.reshape(4, h, w) + rng.normal(0, noise, (4, h, w))
                dst.write(np.clip(refl * 10000, 1, 65535).astype(np.uint16),
                          window=rasterio.windows.Window(c0, r0, w, h))
        for i, name in enumerate(("blue", "green", "red", "nir"), start=1):
            dst.set_band_description(i, name)
    # the fields as polygons: the Voronoi cells of the seeds, clipped to the scene
    box = shapely.box(0, 0, extent, extent)
    cells = shapely.voronoi_polygons(shapely.MultiPoint(pts), extend_to=box)
    geoms, fids = [], []
    for cell in shapely.get_parts(cells):
        inside = tree.query(np.asarray(shapely.get_coordinates(shapely.point_on_surface(cell))))[1][0]
        geoms.append(affinity.translate(cell.intersection(box), x0, y0))
        fids.append(int(inside))
    pick = rng.random(len(geoms)) < reference_share
    ref = gpd.GeoDataFrame({"code": codes[fids][pick].astype(int), "name": [CLASSES[int(c)][0] for c in codes[fids][pick]]},
                           geometry=[g.buffer(-2 * res_m) for g, k in zip(geoms, pick, strict=True) if k], crs=CRS.from_epsg(CRS_EPSG))
    ref = ref[~ref.geometry.is_empty]
    ref.to_file(out / "reference.gpkg", driver="GPKG", engine="pyogrio")
    return out
