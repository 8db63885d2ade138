"""Object-based path at scale: segmentation and object-feature throughput, peak memory, and classify against the pixel path.

    python bench/objects.py [--sizes 4096 16384] [--tile 1024] [--workers 2] [--json out.json]

For each size, a SPOT-like 1.5 m, 4-band scene of Voronoi fields (``chain.demo.vhr``, about one field
per 150 x 150 px) is written, then:
- the object run (segment -> objects -> train -> classify -> mosaic -> validate; RF 100 trees, one run);
- the pixel run on the same scene and reference (sample -> train -> classify ...), to compare classify times.
It prints each step's time, the segmentation and object-feature throughput (Mpx/s), the peak RSS of
this process and its workers over the object run, and the ratio of peak RSS between sizes (target <= 1.3).
With ``exactextract`` installed (not a dependency), it also times exactextract's zonal statistics against
chain's bincount reductions on one tile of the same objects (``--zonal``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify import PeakRSS  # noqa: E402

from chain import config  # noqa: E402
from chain.demo.vhr import write_vhr_scene  # noqa: E402
from chain.runner import run_pipeline, step_names  # noqa: E402


def bench_config(root: Path, scene: Path, name: str, args: argparse.Namespace, objects: bool) -> config.Config:
    data = {
        "workdir": str(root / name), "seed": 1,
        "inputs": {"stack": {"path": str(scene / "vhr.tif")}, "reference": {"path": str(scene / "reference.gpkg"), "name_field": "name"}},
        "grid": {"tile_size_px": args.tile},
        "split": {"runs": 1, "small_class": "drop"},
        "sample": {"max_pixels_per_class": 20000},
        "model": {"n_estimators": args.trees, "n_jobs": args.workers},
        "regularize": {"enabled": False},
        "mosaic": {"cog": True},
        "cluster": {"n_workers": args.workers, "threads_per_worker": 1, "memory_limit": "auto"},
    }
    if objects:
        data["segmentation"] = {"method": args.method, "source": "features", "bands": ["*"], "scale": args.scale,
                                "min_size_m2": args.min_size_m2, "segment_size_m2": args.segment_size_m2,
                                "halo_px": args.halo, "compare_pixels": False}
    return config.parse(data)


def zonal_comparison(cfg: config.Config) -> dict[str, float]:
    """exactextract's mean/stdev/quantiles per object polygon against chain.objects.object_tile, on the first tile."""
    import geopandas as gpd
    import rasterio
    from exactextract import exact_extract

    from chain import products
    from chain.objects import object_tile
    from chain.runner import Context

    ctx = Context(cfg, cfg.workdir)
    cat, spec, polys = products.catalog(ctx), products.spec(ctx), products.reference(ctx)
    tile = products.tiles(ctx)[0]
    out = Path(tempfile.mkdtemp())
    ours = theirs = float("inf")
    for _ in range(2):  # best of two: the first pass also warms the page cache for both
        t0 = time.time()
        object_tile(tile, cat, spec, ctx.paths.segments, polys, list(cfg.segmentation.stats), out)
        ours = min(ours, time.time() - t0)
    with rasterio.open(ctx.paths.segments) as src:
        ids = np.unique(src.read(1, window=tile.window))
    segs = gpd.read_file(ctx.paths.segments_vector, engine="pyogrio")
    segs = segs[segs["id"].isin(ids)]
    ops = ["mean", "stdev", "quantile(q=0.1)", "median", "quantile(q=0.9)"]
    for _ in range(2):
        t0 = time.time()
        exact_extract(str(cfg.inputs.stack.path), segs, ops, output="pandas")
        theirs = min(theirs, time.time() - t0)
    shutil.rmtree(out, ignore_errors=True)
    px = int(tile.window.width * tile.window.height)
    return {"tile_px": px, "objects": int(len(segs)), "chain_s": ours, "exactextract_s": theirs}


def report_rows(rows: list[dict], args: argparse.Namespace) -> None:
    if len(rows) > 1:
        print(f"\npeak RSS at {rows[-1]['side_px']}² / at {rows[0]['side_px']}² = {rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.2f}"
              " (each size in a process of its own)")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.uname()._asdict(), "cpus": psutil.cpu_count(), "rows": rows}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="scene sides, px (1.5 m)")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--halo", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--method", choices=["felzenszwalb", "slic"], default="felzenszwalb")
    ap.add_argument("--scale", type=float, default=300)
    ap.add_argument("--min-size-m2", type=float, default=200)
    ap.add_argument("--segment-size-m2", type=float, default=2000)
    ap.add_argument("--zonal", action="store_true", help="also time exactextract against chain's reductions")
    ap.add_argument("--data", type=Path, help="keep the generated scenes here (reused when present)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work folders")
    ap.add_argument("--no-pixels", action="store_true", help="skip the pixel run (the classify comparison)")
    args = ap.parse_args()
    if len(args.sizes) > 1:
        # one process per size: a process keeps what it once allocated (malloc arenas, caches), so sizes run one
        # after another in one process would count the smaller run's memory into the larger one's peak
        import subprocess

        rows = []
        for side in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                argv, skip = [], False
                for a in sys.argv[1:]:  # the same options, without --sizes and --json and their values
                    if a.startswith("--"):
                        skip = a in ("--sizes", "--json")
                    if not skip:
                        argv.append(a)
                subprocess.run([sys.executable, __file__, *argv, "--sizes", str(side), "--json", f"{tmp}/one.json"], check=True)
                rows += json.loads(Path(f"{tmp}/one.json").read_text())["rows"]
        report_rows(rows, args)
        return

    root = Path(tempfile.mkdtemp(prefix="chain-obj-"))
    data = args.data or root / "data"
    rows = []
    for side in args.sizes:
        scene = data / f"vhr_{side}"
        if not (scene / "reference.gpkg").exists():
            t0 = time.time()
            write_vhr_scene(scene, size_px=side, n_fields=max(20, side * side // 150**2), seed=1)
            print(f"scene {side}² px generated in {time.time() - t0:.0f} s", flush=True)
        px = side * side
        obj = bench_config(root, scene, f"objects_{side}", args, True)
        # step by step, each under its own memory probe: which step holds the peak, in this process or its workers
        t0 = time.time()
        reports, step_rss = [], {}
        for name in step_names():
            with PeakRSS() as rss:
                done = run_pipeline(obj, from_step=name, to_step=name)
            reports += done
            if any(r.action == "ran" for r in done):
                step_rss[name] = (rss.main_peak / 2**20, rss.peak / 2**20)
        total = time.time() - t0
        steps = {r.step: r.seconds for r in reports if r.action == "ran"}
        summary = json.loads((obj.workdir / "segment" / "summary.json").read_text())
        metrics = json.loads((obj.workdir / "final" / "metrics.json").read_text())
        pixel = bench_config(root, scene, f"pixels_{side}", args, False)
        psteps: dict[str, float] = {"classify": float("nan")}
        pmetrics: dict = {"summary": {"oa": {"mean": float("nan")}}}
        if not args.no_pixels:
            preports = run_pipeline(pixel)
            psteps = {r.step: r.seconds for r in preports if r.action == "ran"}
            pmetrics = json.loads((pixel.workdir / "final" / "metrics.json").read_text())
        row = {"side_px": side, "pixels": px, "objects": summary["n_objects"], "total_s": total, "steps_s": steps,
               "segment_mpx_s": px / steps["segment"] / 1e6, "objects_mpx_s": px / steps["objects"] / 1e6,
               "peak_rss_mib": max(v[1] for v in step_rss.values()), "step_rss_mib": step_rss, "pixel_steps_s": psteps,
               "classify_objects_s": steps["classify"], "classify_pixels_s": psteps["classify"],
               "oa_objects": metrics["summary"]["oa"]["mean"], "oa_pixels": pmetrics["summary"]["oa"]["mean"],
               "regions_per_km2_objects": metrics["objects"]["summary"]["objects"]["regions_per_km2"]["mean"]}
        if args.zonal:
            try:
                row["zonal"] = zonal_comparison(obj)
            except ImportError:
                print("  exactextract is not installed: no zonal-statistics comparison", flush=True)
        rows.append(row)
        print(f"\n{side}² px ({px / 1e6:.0f} Mpx), {summary['n_objects']} objects: " + ", ".join(f"{s} {v:.1f}" for s, v in steps.items()),
              flush=True)
        print(f"  segment {row['segment_mpx_s']:.2f} Mpx/s, object features {row['objects_mpx_s']:.2f} Mpx/s, "
              f"end to end {total:.0f} s; peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
        print("  peak RSS per step, MiB (this process / with workers): "
              + ", ".join(f"{s} {m:.0f}/{t:.0f}" for s, (m, t) in step_rss.items()), flush=True)
        print(f"  classify: objects {steps['classify']:.1f} s vs pixels {psteps['classify']:.1f} s "
              f"({psteps['classify'] / steps['classify']:.1f}x); OA objects {row['oa_objects']:.3f}, pixels {row['oa_pixels']:.3f}",
              flush=True)
        if "zonal" in row:
            z = row["zonal"]
            print(f"  zonal statistics of {z['objects']} objects on a {z['tile_px'] / 1e6:.1f} Mpx tile: chain {z['chain_s']:.2f} s, "
                  f"exactextract {z['exactextract_s']:.2f} s ({z['exactextract_s'] / z['chain_s']:.1f}x)", flush=True)
        if not args.keep:
            for c in (obj, pixel):
                shutil.rmtree(c.workdir, ignore_errors=True)
    report_rows(rows, args)
    if not args.data:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
