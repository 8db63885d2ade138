"""End-to-end bench of the time-series path: ingest -> gap-fill -> features -> sample -> train -> classify -> ... -> validate.

A generated Sentinel-2-like series (36 dates x 10 bands, the 10 m and 20 m bands as separate DEFLATE GeoTIFFs,
a cloud mask per date, ~30 % cloudy pixels), 5 runs of 30/70 and a Random Forest of 100 trees. Printed, per scene
size: every step's time, the end-to-end Mpx/s, the peak RSS (this process and its workers), and the **read floor**:
the time to read every band and mask file of the series once with rasterio, on the same number of processes. Also
the classify step with 5 runs against 1 run (the one-pass-per-tile target: <= 1.3x). The generated files are strips
(GDAL's default layout): ingest makes tiled copies of them (``inputs.tiled_copies: auto``, its time is ingest's);
the floor reads the originals.

The base scene is generated once (``--data`` keeps it between invocations); larger scenes repeat it k x k times
through VRT mosaics (bench/classify.py's ``scene_of``): the same files, so reading them is the same work per pixel.

    python bench/timeseries.py                          # 2k and 4k px, 36 dates, 5 runs
    python bench/timeseries.py --base 1024 --factors 1 --dates 12 --data /tmp/ts-small
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import rasterio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify import PeakRSS, scene_of  # noqa: E402

from chain import config  # noqa: E402
from chain.demo import generate  # noqa: E402
from chain.runner import run_pipeline  # noqa: E402


def _read_whole(path: str) -> int:
    # a block cache smaller than one file: the VRT mosaics of the larger scenes decode each repeat again, as the
    # chain's tiles do (its workers' cache, 256 MiB, cannot hold the series either)
    with rasterio.Env(GDAL_CACHEMAX=4 * 2**20), rasterio.open(path) as src:
        return int(src.read().nbytes)


def read_floor(files: list[str], workers: int) -> tuple[float, int]:
    """Seconds to read every file once with rasterio on ``workers`` processes, and the bytes decoded: the best of
    two timed passes after an untimed one (the files in the page cache, as the chain mostly finds them: it reads
    them in sampling and again in classify)."""
    with ProcessPoolExecutor(workers) as pool:
        nbytes = sum(pool.map(_read_whole, files, chunksize=4))  # start the processes, warm the page cache
        times = []
        for _ in range(2):
            t = time.perf_counter()
            sum(pool.map(_read_whole, files, chunksize=4))
            times.append(time.perf_counter() - t)
        return min(times), nbytes


def cloudy_share(scene: Path) -> float:
    masks = sorted(scene.glob("s2/*/*_MASK.*"))
    shares = []
    for m in masks:
        with rasterio.open(m) as src:
            a = src.read(1, out_shape=(256, 256))
        shares.append(float((a != 0).mean()))
    return float(np.mean(shares)) if shares else float("nan")


def bench_config(root: Path, scene: Path, name: str, runs: int, args: argparse.Namespace, cache: str | None) -> Path:
    doc = {
        "workdir": str(root / f"work_{name}"), "seed": 0,
        "inputs": {"s2": {"path": str(scene / "s2")}, "reference": {"path": str(scene / "reference.gpkg")}},
        "grid": {"tile_size_px": args.tile}, "gapfill": {"interval_days": args.interval},
        "split": {"scheme": "30/70", "runs": runs},
        "sample": {"max_pixels_per_class": 4000}, "model": {"type": "rf", "n_estimators": args.trees},
        "cluster": {"n_workers": args.workers, "threads_per_worker": 1, "memory_limit": "6GiB", "processes": True},
    }
    if cache:
        doc["features"] = {"cache": cache}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


S2_TILE_PX = 10980 ** 2
# one dask task per tile (ingest: per input file copied) spread over every worker
TILED = ("ingest", "sample", "cube", "classify", "regularize", "vectorize")


def project(rows: list[dict], workers: int) -> None:
    """Time of one full Sentinel-2 tile (10980² px) on one node like this one, and of a 20-tile region on N such nodes.

    Each step's time is fitted as fixed + per-pixel (two scene sizes; one size: all per-pixel). Sampling is scaled
    by the pixels too, as if the reference covered each S2 tile as densely as the generated scene (the larger bench
    scenes repeat the imagery but not the polygons, so sampling is taken from the smallest scene). Tiled steps
    divide over the nodes' workers; training (capped samples: fixed) and the steps that run in the main process
    (mosaic, validate) do not.
    """
    small, large = rows[0], rows[-1]
    per_px, fixed = {}, {}
    for step in set(small["steps_s"]) | set(large["steps_s"]):
        a, b = small["steps_s"].get(step, 0.0), large["steps_s"].get(step, 0.0)
        if step == "sample" or large is small or step == "train":
            per_px[step], fixed[step] = (0.0, a) if step == "train" else (a / small["pixels"], 0.0)
        else:
            slope = max(0.0, (b - a) / (large["pixels"] - small["pixels"]))
            per_px[step], fixed[step] = slope, max(0.0, a - slope * small["pixels"])

    def region(tiles: int, nodes: int) -> float:
        px = tiles * S2_TILE_PX
        return sum(fixed[s] + per_px[s] * px / (nodes if s in TILED else 1) for s in per_px)

    one = region(1, 1)
    print(f"\nprojection (features.cache={small['cache']}, measured {workers} workers on this machine): one S2 tile "
          f"(10980² px, same series) on one such node: {one / 3600:.1f} h")
    print(f"{'20 S2 tiles on N nodes':>24} {'hours':>7}  (tiled steps over the nodes' workers; train, mosaic, validate not)")
    for n in (1, 5, 10, 20, 40):
        print(f"{n:>24} {region(20, n) / 3600:>7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=int, default=2048, help="side of the generated scene, px")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 2], help="scene sides as multiples of --base")
    ap.add_argument("--dates", type=int, default=36)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--interval", type=int, default=10, help="gapfill.interval_days")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", choices=["none", "zarr", "both"], default="none", help="features.cache")
    ap.add_argument("--data", type=Path, help="keep the generated scene here (reused when present)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work folders (they take GBs)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="chain-ts-"))
    data = args.data or root / "data"
    base = data / f"base_{args.base}_{args.dates}"
    if not (base / "reference.gpkg").exists():
        t0 = time.time()
        generate(base, args.base, args.dates, max(30, args.base ** 2 // 1000), seed=1, cloud_share=0.3)
        print(f"scene {args.base} px, {args.dates} dates generated in {time.time() - t0:.0f} s ({base})", flush=True)
    print(f"cloudy pixels per date (mask != 0): {cloudy_share(base):.1%}; work in {root}", flush=True)
    caches = {"none": [None], "zarr": ["zarr"], "both": [None, "zarr"]}[args.cache]
    rows = []
    for k in args.factors:
        scene = scene_of(base, root / f"x{k}", k)
        side = args.base * k
        px = side * side
        files = sorted(str(p) for p in scene.glob("s2/*/*") if p.suffix in (".tif", ".vrt"))
        floor, nbytes = read_floor(files, args.workers)
        print(f"\n{side}² px: read floor {floor:.1f} s ({len(files)} files, {nbytes / 2**30:.2f} GiB decoded, "
              f"{args.workers} processes)", flush=True)
        for cache in caches:
            tag = f"x{k}_{cache or 'nocache'}"
            one = config.load(bench_config(root, scene, f"{tag}_1run", 1, args, cache))
            reports = run_pipeline(one, to_step="classify")
            classify_1 = next(r.seconds for r in reports if r.step == "classify")
            cfg = config.load(bench_config(root, scene, f"{tag}_{args.runs}runs", args.runs, args, cache))
            with PeakRSS() as rss:
                t = time.time()
                reports = run_pipeline(cfg)
                total = time.time() - t
            steps = {r.step: r.seconds for r in reports if r.action == "ran"}
            row = {"side_px": side, "pixels": px, "cache": cache or "none", "read_floor_s": floor, "total_s": total,
                   "mpx_per_s": px / total / 1e6, "ratio_to_floor": total / floor, "peak_rss_mib": rss.peak / 2**20,
                   "steps_s": steps, "classify_1run_s": classify_1, "classify_ratio": steps.get("classify", float("nan")) / classify_1}
            rows.append(row)
            if not args.keep:  # every reference pixel's features and the cube: GBs per work folder
                for c in (one, cfg):
                    shutil.rmtree(c.workdir, ignore_errors=True)
            print(f"  features.cache={row['cache']}: " + ", ".join(f"{s} {v:.1f}" for s, v in steps.items()), flush=True)
            print(f"  end to end {total:.1f} s = {row['mpx_per_s']:.3f} Mpx/s = {row['ratio_to_floor']:.1f}x the read floor; "
                  f"peak RSS {row['peak_rss_mib']:.0f} MiB; classify {args.runs} runs {steps.get('classify', float('nan')):.1f} s "
                  f"vs 1 run {classify_1:.1f} s = {row['classify_ratio']:.2f}x", flush=True)
    for cache in caches:
        sel = [r for r in rows if r["cache"] == (cache or "none")]
        if sel:
            project(sel, args.workers)
        if len(sel) > 1:
            print(f"features.cache={cache or 'none'}: peak RSS at {sel[-1]['side_px']}² / at {sel[0]['side_px']}² = "
                  f"{sel[-1]['peak_rss_mib'] / sel[0]['peak_rss_mib']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.uname()._asdict(), "cpus": psutil.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
