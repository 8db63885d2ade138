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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from scipy import ndimage

from chain.atomic import atomic_path

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
# the hard scene's extra classes, confusable by design: fallow (a pasture gone wild: lower, later green-up)
# and young cane (replanted: slower, lower regrowth), cut out of the pasture and sugarcane fields
HARD_CLASSES = {8: ("fallow", (190, 190, 110)), 9: ("young cane", (120, 200, 40))}

#                 B2     B3     B4     B5     B6     B7     B8     B8A    B11    B12
VEG = np.array([0.035, 0.070, 0.035, 0.110, 0.290, 0.360, 0.400, 0.420, 0.210, 0.100], np.float32)
TREE = np.array([0.025, 0.050, 0.025, 0.080, 0.240, 0.310, 0.340, 0.360, 0.160, 0.070], np.float32)
SOIL = np.array([0.090, 0.120, 0.150, 0.180, 0.210, 0.230, 0.250, 0.260, 0.330, 0.280], np.float32)
URBAN = np.array([0.130, 0.140, 0.150, 0.160, 0.175, 0.185, 0.195, 0.200, 0.240, 0.220], np.float32)
WATER = np.array([0.060, 0.050, 0.030, 0.020, 0.012, 0.010, 0.008, 0.008, 0.004, 0.003], np.float32)
CLOUD = np.array([0.450, 0.450, 0.460, 0.470, 0.480, 0.480, 0.490, 0.490, 0.380, 0.300], np.float32)


def class_name(code: int) -> str:
    return CLASSES[code][0] if code in CLASSES else HARD_CLASSES[code][0]


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
    f = np.where(code == 8, vigour * (0.42 + 0.2 * np.sin(2 * np.pi * (doy - 60 - phase * 0.1) / 365.0)), f)
    f = np.where(code == 9, 0.7 * vigour * _logistic((age - 190) / 45.0), f)
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
                            "name": [CLASSES[int(c)][0] for c in code]}, geometry=cells, crs=CRS.from_epsg(CRS_EPSG))
    transform = Affine(RES, 0, x0, 0, -RES, y0)
    ids = rasterize(((g, i) for i, g in enumerate(cells)), out_shape=(size, size), transform=transform, fill=0, dtype="int32")
    return gdf, ids


def write_geotiff(path: Path, arr: np.ndarray, transform: Affine, nodata: float | None, colormap: dict | None = None) -> None:
    profile = {"driver": "GTiff", "dtype": arr.dtype.name, "count": 1, "width": arr.shape[1], "height": arr.shape[0],
               "crs": CRS.from_epsg(CRS_EPSG), "transform": transform, "nodata": nodata, "compress": "deflate",
               "predictor": 2 if arr.dtype.kind in "iu" else 1}
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr, 1)
            if colormap:
                dst.write_colormap(1, colormap)



def generate(out: Path, size_px: int = 500, n_dates: int = 24, n_fields: int = 250, seed: int = 0, year: int = 2021,
             layout: str = "folders", s1: bool = False, spot: str = "none", s2_tiles: int = 1, landsat: bool = False,
             difficulty: str = "normal", cloud_share: float | None = None, small_objects: int = 0,
             next_year: dict[str, Any] | None = None) -> Path:
    """Write the demo scene under ``out`` (see the module docstring); returns ``out``.

    ``layout``: "folders" (one folder per date), "theia" / "sen2cor" (L2A product folders) or
    "theia_zip" / "sen2cor_zip" (the same products as .zip archives). The values are the same
    whatever the layout. ``s2_tiles=2`` writes each date as two overlapping products (tiles 40KCB
    in the west, 40KDB in the east, each 60 % of the scene), as an area across two S2 tiles.
    ``spot``: "dimap", "dimap_jp2" or "geotiff" also writes a SPOT-6/7-like PAN + MS pair in ``spot/``;
    ``s1`` a Sentinel-1 series in ``s1/``; ``landsat`` a Landsat 8/9 series in ``landsat/``.
    ``difficulty="hard"``: a scene that tells models apart (see ``harden``): the normal scene's draws are
    kept, and the hardening draws from its own generator.
    ``cloud_share``: the mean share of cloudy pixels per date (benches: e.g. 0.3); None keeps the demo's own clouds.
    ``small_objects``: that many 2-4 px isolated trees and huts (classes 10, 11) in the SPOT pair, on the PAN pixels
    (the S2 series does not see them); half of them are reference polygons, and the field polygons leave them out.
    ``next_year`` (``changed_share``, ``phenology_shift_days``, ``spot_offset_m``): the scene a year after the one of
    ``year - 1`` with the same seed (see ``advance``); reference.gpkg is then that year's polygons, as a user has them.
    """
    from chain.demo import s2 as s2_writer

    if s2_tiles == 2 and layout == "folders":
        from chain.errors import ConfigError

        raise ConfigError("demo.s2_tiles: 2 needs a product layout (demo.layout: theia, sen2cor, or their _zip forms)")
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, size_px, n_fields)
    hard = np.random.default_rng([seed, 3]) if difficulty == "hard" else None
    if hard is not None:
        harden(scene, hard)
    scene.cloud_share = cloud_share
    last_year_ref = None
    spot_shift = (0.0, 0.0)
    if next_year is not None:
        if small_objects:
            from chain.errors import ConfigError

            raise ConfigError("demo.next_year does not take demo.small_objects (the objects would need a history); set one")
        last_year_ref = reference_polygons(scene, seed, hard, None)
        advance(scene, np.random.default_rng([seed, 12]), next_year, out)
        dx, dy = next_year.get("spot_offset_m", (4.0, -3.0))
        spot_shift = (float(dx), float(dy))
        rng = np.random.default_rng([seed, 11])  # another year's weather and acquisitions
    dates = acquisition_dates(rng, n_dates, year)
    for date in dates:
        refl, mask = observe(scene, rng, date.timetuple().tm_yday)
        dn = np.clip(np.rint(refl * 10000), 1, 15000).astype(np.int16)
        if rng.random() < 0.15:  # edge of the satellite swath: no data on one side
            size = scene.size
            yy, xx = np.mgrid[0:size, 0:size]
            dn[xx + 0.4 * yy > rng.uniform(0.6, 1.1) * size] = NODATA
        s2_writer.write_date(out / "s2", layout, s2_tiles, date, dn, mask, scene.t10, scene.t20)

    if s1:
        from chain.demo import s1 as s1_writer

        s1_writer.write_series(out / "s1", np.random.default_rng([seed, 1]), scene.code, scene.ids, scene.phase, scene.vigour,
                               n_dates, year, scene.t10)

    if landsat:
        from chain.demo import landsat as landsat_writer

        landsat_writer.write_series(out / "landsat", scene, np.random.default_rng([seed, 2]), year)

    if spot != "none":
        from chain.demo import spot as spot_writer

        doy = 200  # mid-July: cane tall, pastures green, gardens in their second cycle
        if small_objects:
            small = spot_writer.place_small_objects(spot_writer.field_ids(scene.fields, scene.size * RES, ORIGIN), scene.code,
                                                    small_objects, np.random.default_rng([seed, 7]))
        # a misregistered image (next_year): drawn from a shifted origin, georeferenced at the usual one
        drawn_at = (ORIGIN[0] + spot_shift[0], ORIGIN[1] + spot_shift[1])
        pan, ms, t_pan, t_ms = spot_writer.make_pair(scene.fields, scene.code, scene.phase, scene.vigour, scene.background,
                                                     scene.leaf, drawn_at, scene.size * RES, doy, seed + (1 if next_year else 0),
                                                     cover, small if small_objects else None)
        t_pan, t_ms = (t * Affine.translation(-spot_shift[0] / t.a, spot_shift[1] / t.a) for t in (t_pan, t_ms))
        spot_writer.write_pair(out / "spot", pan, ms, t_pan, t_ms, CRS_EPSG, dt.date(year, 1, 1) + dt.timedelta(days=doy - 1), spot)

    truth = scene.code[scene.ids].astype(np.uint8)
    cmap = {0: (0, 0, 0, 0), **{c: (*v[1], 255) for c, v in CLASSES.items()}, **{c: (*v[1], 255) for c, v in HARD_CLASSES.items()}}
    write_geotiff(out / "truth.tif", truth, scene.t10, 0, cmap)
    ref = reference_polygons(scene, seed, hard, small if spot != "none" and small_objects else None)
    if last_year_ref is not None:  # what the user has: last year's polygons; this year's truth beside them
        with atomic_path(out / "reference_truth.gpkg") as tmp:
            ref.to_file(tmp, driver="GPKG", layer="reference", engine="pyogrio")
        ref = last_year_ref
    with atomic_path(out / "reference.gpkg") as tmp:
        ref.to_file(tmp, driver="GPKG", layer="reference", engine="pyogrio")
    log.info("demo scene: %d x %d px, %d dates, %d fields, %d reference polygons -> %s", scene.size, scene.size, len(dates),
             len(scene.fields), len(ref), out)
    return out


def reference_polygons(scene: Scene, seed: int, hard: np.random.Generator | None, small: np.ndarray | None) -> gpd.GeoDataFrame:
    """Most fields, shrunk inside their borders (mixed edge pixels are not reference data), with the scene's classes."""
    fields = scene.fields.assign(code=scene.code.astype(scene.fields["code"].dtype), name=[class_name(int(c)) for c in scene.code])
    ref = fields.sample(frac=0.82, random_state=seed).sort_values("field_id")
    ref = ref.set_geometry(ref.buffer(-RES if hard is None else 0, join_style="mitre"))
    ref = ref[~ref.is_empty & (ref.area > 25 * RES * RES)]
    if hard is not None:  # label noise: some polygons carry another (plausible) class, as old databases do
        ref = _noisy_labels(ref, hard, share=0.04)
    if small is not None:
        ref = _with_small_objects(ref, small, np.random.default_rng([seed, 8]))
    return ref


# what a field may become a year later (the demo's changes): cane replanted as pasture or gardens, pastures built on,
# forest cleared, bare soil planted, gardens turned to cane
TRANSITIONS = {1: (2, 4, 7), 2: (1, 5, 4), 3: (7,), 4: (1, 2), 7: (1, 4, 5)}


def advance(scene: Scene, rng: np.random.Generator, opts: dict[str, Any], out: Path) -> None:
    """The scene a year later: ``changed_share`` of the fields (among those that can change) take another class, with
    that class's spectra and phenology; every field's season shifts by ``phenology_shift_days`` (+- 6 days); vigour
    varies. Writes ``changes.csv`` (field_id, code before, code after)."""
    import pandas as pd

    code = scene.code.copy()
    can = np.flatnonzero(np.isin(code, list(TRANSITIONS)))
    k = int(round(opts.get("changed_share", 0.15) * len(code)))
    changed = np.sort(rng.choice(can, size=min(k, len(can)), replace=False))
    before = code[changed].copy()
    for i in changed:
        code[i] = rng.choice(TRANSITIONS[int(code[i])])
    scene.code = code
    n = len(code)
    soil_k = rng.uniform(0.8, 1.2, n).astype(np.float32)
    for i in changed:
        c = int(code[i])
        scene.background[i] = URBAN if c == 5 else WATER if c == 6 else SOIL * soil_k[i]
        scene.leaf[i] = TREE if c == 3 else VEG
        scene.phase[i] = rng.uniform(180, 330) if c == 1 else rng.uniform(0, 110)
    scene.phase += np.float32(opts.get("phenology_shift_days", 12.0)) + rng.uniform(-6, 6, n).astype(np.float32)
    scene.vigour *= rng.uniform(0.95, 1.05, n).astype(np.float32)
    table = pd.DataFrame({"field_id": scene.fields["field_id"].to_numpy()[changed], "code_before": before, "code_after": code[changed]})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "changes.csv") as tmp:
        table.to_csv(tmp, index=False)
    log.info("demo: %d of %d fields change class in the next year", len(changed), n)


@dataclass
class Scene:
    """The drawn landscape: fields and their classes, phenology parameters, spectra per pixel."""

    size: int
    fields: gpd.GeoDataFrame
    ids: np.ndarray  # (H, W) field id of each 10 m pixel
    code: np.ndarray  # class of each field
    phase: np.ndarray  # per field: harvest day (sugarcane) or cycle phase
    vigour: np.ndarray
    background: np.ndarray  # (fields, 10) soil / urban / water spectrum
    leaf: np.ndarray  # (fields, 10) vegetation spectrum
    texture: np.ndarray  # (H, W) smooth per-pixel variation of the cover
    t10: Affine
    t20: Affine
    hard: bool = False  # demo.difficulty: hard (see harden)
    cloud_share: float | None = None  # mean cloudy share per date, when set (benches)


def make_scene(rng: np.random.Generator, size_px: int, n_fields: int) -> Scene:
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
    t10 = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    t20 = Affine(2 * RES, 0, ORIGIN[0], 0, -2 * RES, ORIGIN[1])
    return Scene(size, fields, ids, code, phase, vigour, background, leaf, texture, t10, t20)


def harden(scene: Scene, rng: np.random.Generator) -> None:
    """The hard scene (``demo.difficulty: hard``): confusable classes, within-class variability across the scene,
    mixed pixels at field borders and more clouds (those two in ``observe``), label noise (in ``generate``)."""
    code = scene.code = scene.code.copy()
    for src, dst, share in ((1, 9, 0.3), (2, 8, 0.35)):  # young cane among the cane, fallow among the pastures
        fields = np.flatnonzero(code == src)
        code[rng.choice(fields, size=int(round(share * len(fields))), replace=False)] = dst
    scene.fields["code"] = code
    scene.fields["name"] = [class_name(int(c)) for c in code]
    # the season runs ~2 months later in the east than in the west, and vigour varies field to field
    cx = (scene.fields.geometry.centroid.x.to_numpy() - ORIGIN[0]) / (scene.size * RES)
    scene.phase += (40 * (cx - 0.5)).astype(np.float32)
    scene.vigour *= rng.uniform(0.85, 1.1, len(code)).astype(np.float32)
    soils = ~np.isin(code, [5, 6])
    scene.background[soils] *= rng.uniform(0.8, 1.2, (int(soils.sum()), 1)).astype(np.float32)
    scene.texture *= 1.5
    scene.hard = True


def _with_small_objects(ref: gpd.GeoDataFrame, small: np.ndarray, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """The field polygons without the small objects (and a 1 PAN px ring), plus half of the objects as polygons."""
    import pandas as pd

    from chain.demo.spot import PAN_RES, SMALL_CLASSES

    x0, y0 = ORIGIN
    squares = [shapely.box(x0 + c * PAN_RES, y0 - (r + s) * PAN_RES, x0 + (c + s) * PAN_RES, y0 - r * PAN_RES) for r, c, s, _ in small]
    holes = shapely.union_all([sq.buffer(PAN_RES, join_style="mitre") for sq in squares])
    ref = ref.set_geometry(ref.difference(holes))
    pick = rng.random(len(small)) < 0.5
    objs = gpd.GeoDataFrame({"field_id": -1 - np.flatnonzero(pick), "code": small[pick, 3].astype(ref["code"].dtype),
                             "name": [SMALL_CLASSES[int(k)][0] for k in small[pick, 3]]},
                            geometry=[sq for sq, p in zip(squares, pick, strict=True) if p], crs=ref.crs)
    return gpd.GeoDataFrame(pd.concat([ref, objs[ref.columns]], ignore_index=True), crs=ref.crs)


def _noisy_labels(ref: gpd.GeoDataFrame, rng: np.random.Generator, share: float) -> gpd.GeoDataFrame:
    ref = ref.copy()
    classes = np.unique(ref["code"])
    flip = rng.random(len(ref)) < share
    wrong = [int(rng.choice(classes[classes != c])) for c in ref["code"][flip]]
    ref.loc[flip, "code"] = np.asarray(wrong, dtype=ref["code"].dtype)
    ref.loc[flip, "name"] = [class_name(c) for c in wrong]
    return ref


def observe(scene: Scene, rng: np.random.Generator, doy: int) -> tuple[np.ndarray, np.ndarray]:
    """One cloudy look at the scene on day ``doy``: (H, W, 10) reflectance in the S2 bands and the cloud
    mask (0 clear, 1 cloud, 2 cloud shadow). Clouds are smooth blobs, semi-transparent at their edges,
    with a shifted shadow; the mask is dilated."""
    size = scene.size
    f = cover(scene.code, doy, scene.phase, scene.vigour)[scene.ids]
    f = np.clip(f * (1 + scene.texture) + rng.normal(0, 0.02, f.shape), 0, 1)[..., None]
    refl = f * scene.leaf[scene.ids] + (1 - f) * scene.background[scene.ids] + rng.normal(0, 0.004, (size, size, 10))
    if scene.hard:  # a 10 m pixel at a field border sees both fields
        refl = ndimage.gaussian_filter(refl, sigma=(0.5, 0.5, 0))
    kind = rng.random()
    if scene.cloud_share is not None:  # a set mean share: a fifth of the dates clear, the others around it
        coverage = 0.0 if kind < 0.2 else min(0.95, rng.uniform(0.4, 1.6) * scene.cloud_share / 0.8)
    elif scene.hard:  # more clouds: fewer clear dates, more heavily clouded ones
        coverage = 0.0 if kind < 0.3 else rng.uniform(0.05, 0.35) if kind < 0.75 else rng.uniform(0.3, 0.8)
    else:
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
    return refl, mask
