"""The built-in demo scene: a seeded synthetic Sentinel-2-like year over fields, with clouds.

What it writes (real GeoTIFFs and a GPKG in EPSG:32740, UTM 40S, 10 m pixels):
  s2/<YYYYMMDD>/DEMO_<YYYYMMDD>_<BAND>.tif   int16 reflectance x 10000, nodata -10000;
                                             10 m bands at 10 m, 20 m bands (B5 B6 B7 B8A B11 B12) at 20 m
  s2/<YYYYMMDD>/DEMO_<YYYYMMDD>_MASK.tif     uint8: 0 clear, 1 cloud, 2 cloud shadow
  reference.gpkg                             field polygons (shrunk 10 m inside the field): code, name, field_id
  truth.tif                                  the true class of every pixel (uint8, colour table)

Classes have distinct phenologies (sugarcane harvest cycles, pasture seasonality, evergreen forest,
short market-gardening cycles, static urban, water, bare soil with a weed flush); every field gets its
own sowing/harvest date, vigour and soil brightness, every pixel its own texture and noise.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from scipy import ndimage

from chain.atomic import atomic_path
from chain.config import S2_BANDS

log = logging.getLogger(__name__)

CRS_EPSG = 32740
ORIGIN = (338000.0, 7662000.0)  # upper-left corner, west of Saint-Pierre, La Reunion
RES = 10.0
BANDS_20M = {"B5", "B6", "B7", "B8A", "B11", "B12"}
NODATA = -10000

# code: (name, colour, share of the fields)
CLASSES = {
    1: ("sugarcane", (200, 230, 60), 0.25),
    2: ("pasture", (140, 210, 120), 0.18),
    3: ("forest", (20, 100, 40), 0.15),
    4: ("market gardening", (240, 150, 40), 0.14),
    5: ("urban", (200, 40, 40), 0.10),
    6: ("water", (40, 110, 230), 0.08),
    7: ("bare soil", (160, 110, 70), 0.10),
}

#                 B2     B3     B4     B5     B6     B7     B8     B8A    B11    B12
VEG = np.array([0.035, 0.070, 0.035, 0.110, 0.290, 0.360, 0.400, 0.420, 0.210, 0.100], np.float32)
TREE = np.array([0.025, 0.050, 0.025, 0.080, 0.240, 0.310, 0.340, 0.360, 0.160, 0.070], np.float32)
SOIL = np.array([0.090, 0.120, 0.150, 0.180, 0.210, 0.230, 0.250, 0.260, 0.330, 0.280], np.float32)
URBAN = np.array([0.130, 0.140, 0.150, 0.160, 0.175, 0.185, 0.195, 0.200, 0.240, 0.220], np.float32)
WATER = np.array([0.060, 0.050, 0.030, 0.020, 0.012, 0.010, 0.008, 0.008, 0.004, 0.003], np.float32)
CLOUD = np.array([0.450, 0.450, 0.460, 0.470, 0.480, 0.480, 0.490, 0.490, 0.380, 0.300], np.float32)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def cover(code: np.ndarray, doy: int, phase: np.ndarray, vigour: np.ndarray) -> np.ndarray:
    """Fractional vegetation cover of each field on day-of-year ``doy``."""
    f = np.zeros(len(code), np.float32)
    season = np.sin(2 * np.pi * (doy - 20 - phase * 0.1) / 365.0)
    # sugarcane: harvested on day `phase` (180-330), regrows over ~8 months
    age = (doy - phase) % 365
    f = np.where(code == 1, 0.92 * vigour * _logistic((age - 110) / 28.0), f)
    f = np.where(code == 2, vigour * (0.55 + 0.15 * season), f)
    f = np.where(code == 3, vigour * (0.90 + 0.03 * season), f)
    # market gardening: 110-day cycles, 75 days of crop then bare
    cyc = (doy + phase) % 110
    f = np.where(code == 4, np.where(cyc < 75, 0.85 * vigour * _logistic((cyc - 35) / 7.0), 0.04), f)
    f = np.where(code == 5, 0.10 + 0.06 * vigour, f)
    f = np.where(code == 6, 0.0, f)
    f = np.where(code == 7, 0.04 + 0.14 * np.exp(-(((doy - 40 - phase * 0.2) / 18.0) ** 2)), f)
    return f.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    z = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (z - z.mean()) / (z.std() + 1e-9)


def acquisition_dates(rng: np.random.Generator, n: int, year: int) -> list[dt.date]:
    # Sentinel-2 revisits every 5 days; keep an irregular subset (the others were unusable)
    slots = np.arange(2, 366, 5)
    picked = np.sort(rng.choice(slots, size=min(n, len(slots)), replace=False))
    return [dt.date(year, 1, 1) + dt.timedelta(days=int(d) - 1) for d in picked]


def make_fields(rng: np.random.Generator, size: int, n_fields: int) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Voronoi fields over the scene, with a class each: (polygons, field-id raster)."""
    x0, y0 = ORIGIN
    extent = shapely.box(x0, y0 - size * RES, x0 + size * RES, y0)
    pts = np.column_stack([rng.uniform(x0, x0 + size * RES, n_fields), rng.uniform(y0 - size * RES, y0, n_fields)])
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent))
    cells = shapely.intersection(cells, extent)
    cells = cells[~shapely.is_empty(cells)]
    # classes follow the landscape: forest on the "heights", water in the "lows", a town, crops elsewhere
    relief = _smooth_noise(rng, (size, size), size / 6)
    cent = shapely.centroid(cells)
    cx = np.clip(((shapely.get_x(cent) - x0) / RES).astype(int), 0, size - 1)
    cy = np.clip(((y0 - shapely.get_y(cent)) / RES).astype(int), 0, size - 1)
    z = relief[cy, cx]
    town = np.hypot(cx - size * 0.3, cy - size * 0.65) / size
    codes = np.array(list(CLASSES))
    shares = np.array([c[2] for c in CLASSES.values()])
    code = np.empty(len(cells), np.int32)
    order = np.argsort(-z)
    n = len(cells)
    n_forest, n_water, n_urban = int(shares[2] * n), int(shares[5] * n), int(shares[4] * n)
    code[order[:n_forest]] = 3
    code[order[n - n_water:]] = 6
    rest = order[n_forest:n - n_water]
    urban = rest[np.argsort(town[rest])[:n_urban]]
    code[urban] = 5
    others = np.setdiff1d(rest, urban)
    crop_codes = codes[[0, 1, 3, 6]]
    crop_p = shares[[0, 1, 3, 6]] / shares[[0, 1, 3, 6]].sum()
    code[others] = rng.choice(crop_codes, size=len(others), p=crop_p)
    gdf = gpd.GeoDataFrame({"field_id": np.arange(len(cells), dtype=np.int32), "code": code,
                            "name": [CLASSES[c][0] for c in code]}, geometry=cells, crs=CRS.from_epsg(CRS_EPSG))
    transform = Affine(RES, 0, x0, 0, -RES, y0)
    ids = rasterize(((g, i) for i, g in enumerate(cells)), out_shape=(size, size), transform=transform, fill=0, dtype="int32")
    return gdf, ids


def _write(path: Path, arr: np.ndarray, transform: Affine, nodata: float | None, colormap: dict | None = None) -> None:
    profile = {"driver": "GTiff", "dtype": arr.dtype.name, "count": 1, "width": arr.shape[1], "height": arr.shape[0],
               "crs": CRS.from_epsg(CRS_EPSG), "transform": transform, "nodata": nodata, "compress": "deflate",
               "predictor": 2 if arr.dtype.kind in "iu" else 1}
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr, 1)
            if colormap:
                dst.write_colormap(1, colormap)


def _write_s1(folder: Path, rng: np.random.Generator, code: np.ndarray, ids: np.ndarray, phase: np.ndarray,
              vigour: np.ndarray, n_dates: int, year: int, t10: Affine) -> None:
    """A Sentinel-1-like VV/VH series (linear sigma0, 4-look speckle), S1Tiling file names, ASC and DES."""
    field_db = rng.normal(0, 0.5, len(code)).astype(np.float32)
    slots = np.arange(3, 366, 6)
    days = np.sort(rng.choice(slots, size=min(n_dates, len(slots)), replace=False))
    for k, doy in enumerate(days):
        date = dt.date(year, 1, 1) + dt.timedelta(days=int(doy) - 1)
        direction, orbit, hour = ("ASC", "151", "143512") if k % 2 else ("DES", "078", "023456")
        f = cover(code, int(doy), phase, vigour)
        db = {
            "vv": np.select([code == 3, code == 5, code == 6], [-7.5, -3.0, -21.0], -13 + 5 * f),
            "vh": np.select([code == 3, code == 5, code == 6], [-12.5, -10.0, -27.0], -22 + 9 * f),
        }
        for pol, per_field in db.items():
            linear = 10 ** ((per_field + field_db)[ids] / 10)
            speckled = (linear * rng.gamma(4.0, 0.25, ids.shape)).astype(np.float32)
            _write(folder / f"s1{'ab'[k % 2]}_40KCB_{pol}_{direction}_{orbit}_{date:%Y%m%d}t{hour}.tif", speckled, t10, 0.0)


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
        _write(folder / f"{name}_FRE_{band}.tif", arr, t20 if band in BANDS_20M else t10, NODATA)
    # CLM bits: 0 = clouds or shadows, 1 = clouds, 2 = shadows of detected clouds
    clm = np.where(mask == 1, 0b011, np.where(mask == 2, 0b101, 0)).astype(np.uint8)
    edg = nodata.astype(np.uint8)
    h, w = mask.shape
    half = lambda a: a.reshape(h // 2, 2, w // 2, 2).max(axis=(1, 3))  # noqa: E731
    for kind, r1 in (("CLM", clm), ("EDG", edg), ("SAT", np.zeros_like(clm))):
        _write(folder / "MASKS" / f"{name}_{kind}_R1.tif", r1, t10, None)
        _write(folder / "MASKS" / f"{name}_{kind}_R2.tif", half(r1), t20, None)
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


def generate(out: Path, size_px: int = 500, n_dates: int = 24, n_fields: int = 250, seed: int = 0, year: int = 2021,
             layout: str = "folders", s1: bool = False, spot: str = "none", s2_tiles: int = 1) -> Path:
    """Write the demo scene under ``out`` (see the module docstring); returns ``out``.

    ``layout``: "folders" (one folder per date), "theia" / "sen2cor" (L2A product folders) or
    "theia_zip" / "sen2cor_zip" (the same products as .zip archives). The values are the same
    whatever the layout. ``s2_tiles=2`` writes each date as two overlapping products (tiles 40KCB
    in the west, 40KDB in the east, each 60 % of the scene), as an area across two S2 tiles.
    ``spot``: "dimap", "dimap_jp2" or "geotiff" also writes a SPOT-6/7-like PAN + MS pair in ``spot/``.
    """
    if s2_tiles == 2 and layout == "folders":
        raise ValueError("demo.s2_tiles: 2 needs a product layout (theia, sen2cor, or their _zip forms)")
    rng = np.random.default_rng(seed)
    size = size_px + size_px % 2  # even, so the 20 m bands tile the 10 m grid exactly
    fields, ids = make_fields(rng, size, n_fields)
    nf = len(fields)
    code = fields["code"].to_numpy()
    phase = np.where(code == 1, rng.uniform(180, 330, nf), rng.uniform(0, 110, nf)).astype(np.float32)
    vigour = rng.uniform(0.82, 1.05, nf).astype(np.float32)
    soil_k = rng.uniform(0.8, 1.2, nf).astype(np.float32)
    background = np.where((code == 5)[:, None], URBAN, np.where((code == 6)[:, None], WATER, SOIL * soil_k[:, None]))
    leaf = np.where((code == 3)[:, None], TREE, VEG)
    texture = 0.06 * _smooth_noise(rng, (size, size), 2.0)
    bg_px = background[ids]  # (H, W, 10)
    leaf_px = leaf[ids]
    t10 = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    t20 = Affine(2 * RES, 0, ORIGIN[0], 0, -2 * RES, ORIGIN[1])
    dates = acquisition_dates(rng, n_dates, year)
    s2 = out / "s2"
    for date in dates:
        doy = date.timetuple().tm_yday
        f = cover(code, doy, phase, vigour)[ids]
        f = np.clip(f * (1 + texture) + rng.normal(0, 0.02, f.shape), 0, 1)[..., None]
        refl = f * leaf_px + (1 - f) * bg_px + rng.normal(0, 0.004, (size, size, 10))
        # clouds: smooth blobs, semi-transparent at their edges, with a shifted shadow
        kind = rng.random()
        coverage = 0.0 if kind < 0.4 else rng.uniform(0.02, 0.3) if kind < 0.8 else rng.uniform(0.3, 0.8)
        mask = np.zeros((size, size), np.uint8)
        if coverage > 0:
            field = _smooth_noise(rng, (size, size), size / 14)
            thr = np.quantile(field, 1 - coverage)
            alpha = np.clip((field - thr) / 0.4, 0, 1)
            shift = (int(size * 0.04) + 1, int(size * 0.03) + 1)
            shadow = np.roll(alpha, shift, axis=(0, 1)) * (alpha < 0.05)
            refl = refl * (1 - 0.65 * shadow[..., None])
            refl = (1 - alpha[..., None]) * refl + alpha[..., None] * CLOUD
            mask[ndimage.binary_dilation(shadow > 0.1, iterations=1)] = 2
            mask[ndimage.binary_dilation(alpha > 0.05, iterations=2)] = 1
        dn = np.clip(np.rint(refl * 10000), 1, 15000).astype(np.int16)
        if rng.random() < 0.15:  # edge of the satellite swath: no data on one side
            yy, xx = np.mgrid[0:size, 0:size]
            dn[xx + 0.4 * yy > rng.uniform(0.6, 1.1) * size] = NODATA
        bands = {}
        for b, band in enumerate(S2_BANDS):
            arr = dn[..., b]
            if band in BANDS_20M:
                blocks = arr.reshape(size // 2, 2, size // 2, 2)
                nod = (blocks == NODATA).any(axis=(1, 3))
                arr = np.where(nod, NODATA, np.rint(blocks.mean(axis=(1, 3), dtype=np.float32))).astype(np.int16)
            bands[band] = arr
        if layout == "folders":
            folder = s2 / f"{date:%Y%m%d}"
            for band, arr in bands.items():
                _write(folder / f"DEMO_{date:%Y%m%d}_{band}.tif", arr, t20 if band in BANDS_20M else t10, NODATA)
            _write(folder / f"DEMO_{date:%Y%m%d}_MASK.tif", mask, t10, None)
        else:
            cut = (size * 2 // 5) // 2 * 2, (size * 3 // 5) // 2 * 2  # even: the 20 m bands split too
            parts = [("40KCB", 0, size)] if s2_tiles == 1 else [("40KCB", 0, cut[1]), ("40KDB", cut[0], size)]
            writer = _write_theia if layout.startswith("theia") else _write_sen2cor
            for tile, c0, c1 in parts:
                sub = {b: a[:, c0 // 2:c1 // 2] if b in BANDS_20M else a[:, c0:c1] for b, a in bands.items()}
                writer(s2, date, sub, mask[:, c0:c1], dn[:, c0:c1, 0] == NODATA, t10 * Affine.translation(c0, 0),
                       t20 * Affine.translation(c0 // 2, 0), zipped=layout.endswith("_zip"), tile=tile)

    if s1:
        _write_s1(out / "s1", np.random.default_rng([seed, 1]), code, ids, phase, vigour, n_dates, year, t10)

    if spot != "none":
        from chain import demo_spot

        doy = 200  # mid-July: cane tall, pastures green, gardens in their second cycle
        pan, ms, t_pan, t_ms = demo_spot.make_pair(fields, code, phase, vigour, background, leaf, ORIGIN, size * RES, doy,
                                                   seed, cover)
        demo_spot.write_pair(out / "spot", pan, ms, t_pan, t_ms, CRS_EPSG, dt.date(year, 1, 1) + dt.timedelta(days=doy - 1), spot)

    truth = code[ids].astype(np.uint8)
    cmap = {0: (0, 0, 0, 0), **{c: (*v[1], 255) for c, v in CLASSES.items()}}
    _write(out / "truth.tif", truth, t10, 0, cmap)
    # reference: most fields, shrunk inside their borders (mixed edge pixels are not reference data)
    ref = fields.sample(frac=0.82, random_state=seed).sort_values("field_id")
    ref = ref.set_geometry(ref.buffer(-RES, join_style="mitre"))
    ref = ref[~ref.is_empty & (ref.area > 25 * RES * RES)]
    with atomic_path(out / "reference.gpkg") as tmp:
        ref.to_file(tmp, driver="GPKG", layer="reference", engine="pyogrio")
    log.info("demo scene: %d x %d px, %d dates, %d fields, %d reference polygons -> %s", size, size, len(dates), nf, len(ref), out)
    return out


def ensure(reference_path: Path, size_px: int, n_dates: int, n_fields: int, seed: int, year: int,
           layout: str = "folders", s1: bool = False, spot: str = "none", s2_tiles: int = 1) -> bool:
    """Generate the demo scene beside ``reference_path`` (``<folder>/reference.gpkg``, with ``<folder>/s2``
    and, if ``s1``, ``<folder>/s1``) when it is missing; True when it was generated."""
    out = reference_path.parent
    if reference_path.name != "reference.gpkg":
        from chain.errors import ConfigError

        raise ConfigError("demo: inputs.reference.path must be '<folder>/reference.gpkg', with the image inputs in "
                          "'<folder>/s2' and '<folder>/s1', for the demo generator")
    wanted = [out / "s2"] + ([out / "s1"] if s1 else []) + ([out / "spot"] if spot != "none" else [])
    if reference_path.exists() and all(p.is_dir() and any(p.iterdir()) for p in wanted):
        return False
    log.info("generating the demo scene (%d px, %d dates) in %s", size_px, n_dates, out)
    generate(out, size_px, n_dates, n_fields, seed, year, layout, s1, spot, s2_tiles)
    return True
