"""Classification speed on the reference workload: chain vs OTB ImageClassifier vs naive scikit-learn.

Reference workload (seeded): a SIZE² float32 stack of 160 bands (16 dates x 10 bands), tiled
256 x 256, six classes on field-like regions; training pixels from ~300 polygons (~10,000 pixels);
Random Forest of 100 trees, max depth 25, min 5 samples to split. All three classify the same image
with a forest trained on the same pixels:

- chain: the classify step (read, features, predict, write class + confidence tiles), dask
  LocalCluster, compiled forest evaluation (chain.forest);
- naive scikit-learn: the same fitted forest, `predict_proba` over 512 x 512 rasterio windows with
  n_jobs=2, writing class + confidence;
- OTB 8 (`otbcli_TrainVectorClassifier` on the same pixels with -classifier.rf.acc 0 so that it
  builds all trees, then `otbcli_ImageClassifier`, 2 threads); skipped when OTB is absent.

Then the memory table: the classify step on SIZE·k scenes (VRT mosaics of the stack), peak RSS.

    python bench/classify_speed.py                    # 2048 px, then memory at 1024, 4096, 8192
    python bench/classify_speed.py --size 1024 --memory-sides
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import yaml
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify import PeakRSS, vrt_mosaic  # noqa: E402  (the other bench script)

from chain import config  # noqa: E402
from chain.runner import run_pipeline  # noqa: E402
from chain.sampling import Samples, load_samples, select_run  # noqa: E402

RES = 10.0
X0, Y0 = 500000.0, 5000000.0
N_CLASSES, DATES, BANDS = 6, 16, 10


def generate(out: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    n_fields = max(50, int(1500 * (size / 2048) ** 2))
    extent = shapely.box(X0, Y0 - size * RES, X0 + size * RES, Y0)
    pts = np.column_stack([rng.uniform(X0, X0 + size * RES, n_fields), rng.uniform(Y0 - size * RES, Y0, n_fields)])
    cells = shapely.intersection(shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent)), extent)
    code = rng.integers(1, N_CLASSES + 1, len(cells))
    transform = Affine(RES, 0, X0, 0, -RES, Y0)
    field = rasterize(((g, i) for i, g in enumerate(cells)), out_shape=(size, size), transform=transform, dtype="int32")
    # class profiles over dates x bands that overlap, per-field shifts and pixel noise: deep trees
    t = np.linspace(0, 1, DATES)[:, None]
    base = np.stack([0.2 + 0.15 * np.sin(2 * np.pi * (t + rng.uniform()) * rng.uniform(0.5, 2)) * rng.uniform(0.3, 1, BANDS)
                     for _ in range(N_CLASSES)]).astype(np.float32)  # (classes, dates, bands)
    shift = rng.normal(0, 0.05, (len(cells), DATES, BANDS)).astype(np.float32)
    stack = out / "stack.tif"
    profile = {"driver": "GTiff", "dtype": "float32", "count": DATES * BANDS, "width": size, "height": size,
               "crs": CRS.from_epsg(32631), "transform": transform, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "interleave": "pixel", "BIGTIFF": "YES"}
    with rasterio.open(stack, "w", **profile) as dst:
        for r0 in range(0, size, 256):
            f = field[r0:r0 + 256]
            v = base[code[f] - 1] + shift[f] + rng.normal(0, 0.06, (*f.shape, DATES, BANDS)).astype(np.float32)
            dst.write(v.reshape(*f.shape, -1).transpose(2, 0, 1), window=Window(0, r0, size, f.shape[0]))
        for d in range(DATES):
            for b in range(BANDS):
                dst.set_band_description(d * BANDS + b + 1, f"B{b + 1}_d{d:02d}")
    ref = gpd.GeoDataFrame({"code": code}, geometry=cells, crs=CRS.from_epsg(32631))
    ref = ref.sample(n=min(1000, len(ref)), random_state=seed)  # 30 % of them (~300) train
    ref = ref.set_geometry(ref.buffer(-RES))
    ref = ref[~ref.is_empty]
    polys = out / "reference.gpkg"
    ref.to_file(polys, driver="GPKG", layer="reference", engine="pyogrio")
    return stack, polys


def chain_config(root: Path, stack: Path, polys: Path, name: str, workers: int, threads: int, processes: bool = True) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "workdir": str(root / name), "seed": 0,
        "inputs": {"stack": {"path": str(stack)}, "reference": {"path": str(polys)}},
        "grid": {"tile_size_px": 512}, "split": {"scheme": "30/70"},
        "sample": {"max_pixels_per_polygon": 34},
        "model": {"n_estimators": 100, "max_depth": 25, "min_samples_split": 5, "n_jobs": 2},
        "regularize": {"enabled": False},
        "cluster": {"n_workers": workers, "threads_per_worker": threads, "memory_limit": "3GiB", "gdal_cache_mb": 64,
                    "processes": processes},
    }))
    return path


def naive_sklearn(model, stack: Path, out: Path) -> float:  # type: ignore[no-untyped-def]
    model.set_params(n_jobs=2)
    t0 = time.time()
    with rasterio.open(stack) as src:
        prof = {"driver": "GTiff", "dtype": "uint8", "count": 2, "width": src.width, "height": src.height,
                "crs": src.crs, "transform": src.transform, "tiled": True, "compress": "deflate"}
        with rasterio.open(out, "w", **prof) as dst:
            for r0 in range(0, src.height, 512):
                for c0 in range(0, src.width, 512):
                    w = Window(c0, r0, min(512, src.width - c0), min(512, src.height - r0))
                    X = src.read(window=w).reshape(src.count, -1).T
                    proba = model.predict_proba(X)
                    best = proba.argmax(1)
                    cls = model.classes_[best].astype(np.uint8)
                    conf = np.rint(proba[np.arange(len(best)), best] * 100).astype(np.uint8)
                    dst.write(np.stack([cls, conf]).reshape(2, int(w.height), int(w.width)), window=w)
    return time.time() - t0


def read_only(stack: Path) -> float:
    t0 = time.time()
    with rasterio.open(stack) as src:
        for r0 in range(0, src.height, 512):
            for c0 in range(0, src.width, 512):
                src.read(window=Window(c0, r0, min(512, src.width - c0), min(512, src.height - r0)))
    return time.time() - t0


def otb(root: Path, stack: Path, train: Samples, names: list[str]) -> tuple[float, Path] | None:
    if shutil.which("otbcli_ImageClassifier") is None or shutil.which("otbcli_TrainVectorClassifier") is None:
        print("OTB: otbcli_ImageClassifier not found (Debian package otb-bin); skipped", flush=True)
        return None
    fields = [f"f{i}" for i in range(len(names))]  # OTB field names: short and plain
    pts = gpd.GeoDataFrame({**{f: train.X[:, i].astype(np.float64) for i, f in enumerate(fields)}, "code": train.code},
                           geometry=gpd.points_from_xy(train.col, train.row), crs=CRS.from_epsg(32631))
    vec = root / "otb_samples.sqlite"
    pts.to_file(vec, driver="SQLite", engine="pyogrio")
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "2", "OTB_MAX_RAM_HINT": "1024"}
    model = root / "otb_rf.txt"
    subprocess.run(["otbcli_TrainVectorClassifier", "-io.vd", str(vec), "-io.out", str(model), "-cfield", "code",
                    "-classifier", "rf", "-classifier.rf.nbtrees", "100", "-classifier.rf.max", "25",
                    "-classifier.rf.min", "5", "-classifier.rf.acc", "0", "-feat", *fields],
                   check=True, capture_output=True, env=env)
    out = root / "otb_map.tif"
    t0 = time.time()
    subprocess.run(["otbcli_ImageClassifier", "-in", str(stack), "-model", str(model), "-out", str(out), "uint8",
                    "-confmap", str(root / "otb_conf.tif"), "-ram", "1024"], check=True, capture_output=True, env=env)
    return time.time() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--memory-sides", type=int, nargs="*", default=[1, 4, 8],
                    help="memory table: scene sides as multiples of --size / 2 (default 1k, 4k, 8k for --size 2048)")
    ap.add_argument("--skip-otb", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="chain-speed-"))
    t0 = time.time()
    stack, polys = generate(root, args.size)
    px = args.size ** 2
    print(f"workload: {args.size}² px x {DATES * BANDS} bands float32 ({stack.stat().st_size / 2**30:.1f} GiB), "
          f"generated in {time.time() - t0:.0f} s in {root}", flush=True)
    results: dict = {"machine": platform.uname()._asdict(), "cpus": os.cpu_count(), "size": args.size}

    # train once through chain; every engine below uses this forest or these pixels
    cfg = config.load(chain_config(root, stack, polys, "chain_w2t1", 2, 1))
    run_pipeline(cfg, to_step="compare_models")
    import joblib

    model = joblib.load(cfg.workdir / "train" / "run_0" / "model.joblib")
    manifest = json.loads((cfg.workdir / "train" / "run_0" / "manifest.json").read_text())
    samples = load_samples(cfg.workdir / "sample" / "pixels.npz")
    import pandas as pd

    train = select_run(samples, pd.read_csv(cfg.workdir / "split" / "split.csv"), 0, "train", None, 0)
    print(f"forest: 100 trees on {len(train.code)} pixels from {len(np.unique(train.poly_id))} polygons", flush=True)

    # numba compiles the forest kernels once per installation (cached on disk): do it before timing
    from chain import forest

    forest.FastForest(model, threads=1).predict_proba(train.X[:10].astype(np.float32))
    forest.FastForest(model, threads=2).predict_proba(train.X[:10].astype(np.float32))

    rows = []
    secs = read_only(stack)
    rows.append(("read only (rasterio, 512² windows)", secs))
    secs = naive_sklearn(model, stack, root / "naive.tif")
    rows.append(("naive scikit-learn (512² windows, n_jobs=2)", secs))
    chain_maps = {}
    for workers, threads, processes in ((2, 1, True), (1, 2, True), (1, 2, False)):
        name = f"chain_w{workers}t{threads}" + ("" if processes else "_inprocess")
        c = cfg if name == "chain_w2t1" else config.load(chain_config(root, stack, polys, name, workers, threads, processes))
        if c is not cfg:  # same seed and pixels: the same forest (checked below through the maps)
            run_pipeline(c, to_step="compare_models")
        t = time.time()
        run_pipeline(c, from_step="classify", to_step="classify")
        where = "worker process(es)" if processes else "threads of the main process"
        rows.append((f"chain classify ({workers} x {threads} thread(s), {where})", time.time() - t))
        chain_maps[name] = c.workdir
    if not args.skip_otb:
        res = otb(root, stack, train, manifest["feature_names"])
        if res:
            rows.append(("OTB 8 ImageClassifier (2 threads)", res[0]))

    naive_cls = rasterio.open(root / "naive.tif").read(1)
    from chain.classify import tile_paths
    from chain.grid import GridSpec, make_tiles

    with rasterio.open(stack) as src:
        grid = GridSpec(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height)
    tiles = make_tiles(grid, 512)
    same = total = 0  # over every chain configuration's map
    for workdir in chain_maps.values():
        for t in tiles:
            with rasterio.open(tile_paths(workdir / "classify" / "run_0", t)[0]) as src:
                a = src.read(1)
            b = naive_cls[t.window.row_off:t.window.row_off + t.window.height, t.window.col_off:t.window.col_off + t.window.width]
            same += int((a == b).sum())
            total += a.size
    print(f"\n{'engine':<64}{'seconds':>9}{'Mpx/s':>8}{'vs naive':>10}{'vs OTB':>8}", flush=True)
    naive_s = rows[1][1]
    otb_s = next((s for name, s in rows if name.startswith("OTB")), None)
    for name, s in rows:
        vs_otb = f"{otb_s / s:>7.2f}x" if otb_s else f"{'-':>8}"
        print(f"{name:<64}{s:>9.1f}{px / s / 1e6:>8.3f}{naive_s / s:>9.2f}x{vs_otb}")
    print(f"\nchain ({len(chain_maps)} maps) vs scikit-learn predictions: {same:,} of {total:,} pixels identical "
          f"({100 * same / total:.4f} %)")
    results["speed"] = [{"engine": n, "seconds": s, "mpx_per_s": px / s / 1e6} for n, s in rows]
    results["identical_pixels"] = [same, total]

    if args.memory_sides:
        print(f"\n{'side':>7}{'pixels':>14}{'seconds':>9}{'Mpx/s':>8}{'peak RSS MiB':>14}", flush=True)
        mem = []
        half = args.size // 2
        for k in args.memory_sides:
            side = half * k
            if side == args.size:
                src_stack = stack
            elif side < args.size:
                src_stack = vrt_mosaic(stack, root / f"stack_{side}.vrt", side=side)
            else:
                src_stack = vrt_mosaic(stack, root / f"stack_{side}.vrt", side // args.size)
            c = config.load(chain_config(root, src_stack, polys, f"mem_{side}", 2, 1))
            run_pipeline(c, to_step="compare_models")
            with PeakRSS() as rss:
                t = time.time()
                run_pipeline(c, from_step="classify", to_step="classify")
                s = time.time() - t
            mem.append({"side": side, "seconds": s, "peak_rss_mib": rss.peak / 2**20})
            print(f"{side:>6}²{side * side:>14,}{s:>9.1f}{side * side / s / 1e6:>8.3f}{rss.peak / 2**20:>14.0f}", flush=True)
        print(f"peak RSS at {mem[-1]['side']}² / at {mem[0]['side']}² = {mem[-1]['peak_rss_mib'] / mem[0]['peak_rss_mib']:.2f}")
        results["memory"] = mem
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
