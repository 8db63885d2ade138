"""Benchmark of whole-tile segmentation (model.type fcn) against the sliding-window patch CNN (model.type patch_cnn).

Part 1, mapping speed on the same window of the demo's SPOT scene at 1.5 m, through the chain's own
predictors (read + network + blending for the FCN; read + patch cutting + network for the patch CNN),
at the prior work's sizes (FCN ~1.4 M parameters, patch CNN 65 x 65 px input, ~110 k parameters) and at
the demo config's reduced sizes. Weights are random: speed does not depend on them. The FCN is also
timed on a whole 512 x 512 tile, where its window overlap costs less than on a small window.
Part 2, memory with scene size: the FCN maps every 512 x 512 tile of scenes of 1000^2 and 2000^2 px
(one process per size, peak RSS sampled), so that peak memory flat with scene size is checked.

    python bench/fcn.py                    # CPU (CUDA when present: --device cuda)
    python bench/fcn.py --skip-memory
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify import PeakRSS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chain import config  # noqa: E402
from chain.deep.export import served  # noqa: E402
from chain.deep.inputs import PatchInput  # noqa: E402
from chain.deep.trainer import Normaliser  # noqa: E402

SIZES = {  # (FCN widths, patch CNN channels)
    "paper": ((32, 64, 128, 192), (32, 48, 64, 64)),
    "demo": ((16, 32, 64, 96), (16, 24, 32, 32)),
}
N_CLASSES = 9


def scene(data: Path, size_px: int):
    """(catalogue, feature spec) of a demo SPOT + S2 scene of ``size_px`` S2 pixels (x 6.67 at 1.5 m), generated once."""
    from chain import products
    from chain.runner import Context, run_pipeline

    folder = data / f"scene_{size_px}"
    cfg = config.parse({
        "workdir": str(folder / "work"), "seed": 0,
        "demo": {"size_px": size_px, "n_dates": 6, "n_fields": max(40, size_px * 120 // 150), "spot": "geotiff", "small_objects": 400},
        "inputs": {"s2": {"path": str(folder / "s2")}, "spot": {"path": str(folder / "spot")},
                   "reference": {"path": str(folder / "reference.gpkg"), "name_field": "name"}},
        "grid": {"resolution_m": 1.5, "tile_size_px": 512}, "gapfill": {"interval_days": 60},
    }, base_dir=folder)
    if not (folder / "reference.gpkg").exists():
        from chain.demo import ensure

        ensure(cfg.inputs.reference.path, **cfg.demo.model_dump())
    run_pipeline(cfg, to_step="features")
    ctx = Context(cfg, cfg.workdir)
    return products.catalog(ctx), products.spec(ctx)


def _norm(names_channels: dict[str, int]) -> Normaliser:
    return Normaliser({k: [1000.0] * c for k, c in names_channels.items()}, {k: [500.0] * c for k, c in names_channels.items()})


def fcn_predictor(widths, device, window_px=256, overlap_px=64):
    from chain.deep.segment import Lattice
    from chain.models.fcn import FCNNet, FCNPredictor

    net = FCNNet(N_CLASSES, 5, widths).eval()
    inputs = [PatchInput("spot", "vhr", 1, source="spot")]
    model = served(net, _norm({"spot": 5}), {"spot": {"channels": 5, "size": window_px}}, ["spot"]).to(device)
    return FCNPredictor(inputs, list(range(1, N_CLASSES + 1)), model, device, Lattice(window_px, overlap_px)), net


def patch_predictor(channels, device, patch=65, batch=512):
    from chain.deep.pipeline import DevicePatchPredictor
    from chain.models.patch_cnn import PatchCNNNet

    net = PatchCNNNet(N_CLASSES, 5, patch, channels).eval()
    inputs = [PatchInput("vhr", "vhr", patch, source="spot")]
    model = served(net, _norm({"vhr": 5}), {"vhr": {"channels": 5, "size": patch}}, ["vhr"]).to(device)
    return DevicePatchPredictor(inputs, list(range(1, N_CLASSES + 1)), batch, model, device), net


def timed(predictor, cat, spec, window) -> float:
    from rasterio.windows import Window

    predictor.predict_window(cat, spec, Window(0, 0, 16, 16))  # warm-up
    t0 = time.perf_counter()
    valid, _, _ = predictor.predict_window(cat, spec, window)
    return valid.size / (time.perf_counter() - t0)


def speed(data: Path, device: torch.device, side: int) -> None:
    from rasterio.windows import Window

    cat, spec = scene(data, 150)
    win = Window(128, 128, side, side)
    tile = Window(0, 0, min(512, cat.grid.width), min(512, cat.grid.height))
    print(f"\n## Part 1: mapping speed, {cat.grid.width} x {cat.grid.height} px scene at 1.5 m, {device}, "
          f"{torch.get_num_threads()} threads\n")
    print(f"| size | FCN parameters | patch CNN parameters | patch CNN px/s ({side}² window) | FCN px/s (same window) | "
          "FCN px/s (512² tile) | FCN / patch CNN (window) | (tile) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (widths, channels) in SIZES.items():
        fcn, fnet = fcn_predictor(widths, device)
        patch, pnet = patch_predictor(channels, device)
        p_rate = timed(patch, cat, spec, win)
        f_rate = timed(fcn, cat, spec, win)
        f_tile = timed(fcn, cat, spec, tile)
        n = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
        print(f"| {name} | {n(fnet):,} | {n(pnet):,} | {p_rate:,.0f} | {f_rate:,.0f} | {f_tile:,.0f} | {f_rate / p_rate:.1f}x | "
              f"{f_tile / p_rate:.1f}x |", flush=True)


def memory_child(data: Path, size_px: int, device: str) -> None:
    """One process: the FCN (demo widths) over every tile of the scene; prints one JSON line."""
    from chain.grid import make_tiles

    cat, spec = scene(data, size_px)
    fcn, _ = fcn_predictor(SIZES["demo"][0], torch.device(device))
    tiles = make_tiles(cat.grid, 512)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        for t in tiles:
            fcn.predict_window(cat, spec, t.window)
        seconds = time.perf_counter() - t0
    print(json.dumps({"size": f"{cat.grid.width} x {cat.grid.height}", "px": cat.grid.width * cat.grid.height, "tiles": len(tiles),
                      "seconds": seconds, "peak_mib": rss.peak / 2**20}))


def memory(data: Path, device: str) -> None:
    print("\n## Part 2: FCN (demo widths) over every 512² tile, one process per scene size\n")
    print("| scene | tiles | seconds | px/s | peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    peaks = []
    for size_px in (150, 300):
        scene(data, size_px)  # generated and ingested outside the measured process
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(size_px), "--data", str(data), "--device", device],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        peaks.append(r["peak_mib"])
        print(f"| {r['size']} | {r['tiles']} | {r['seconds']:.1f} | {r['px'] / r['seconds']:,.0f} | {r['peak_mib']:,.0f} |", flush=True)
    print(f"\npeak RSS ratio 4x the pixels / 1x: {peaks[1] / peaks[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", type=Path, default=ROOT / "demo" / "bench_fcn", help="generated scenes (kept between runs)")
    ap.add_argument("--window", type=int, default=128, help="side of the window both models map (part 1)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.memory_child:
        memory_child(args.data, args.memory_child, args.device)
        return
    print(f"# bench/fcn.py on {platform.node()}, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    speed(args.data, torch.device(args.device), args.window)
    if not args.skip_memory:
        memory(args.data, args.device)


if __name__ == "__main__":
    main()
