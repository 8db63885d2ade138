"""Benchmark of the patch models: training samples/s, inference pixels/s and peak memory, on this machine.

Part 1, the networks alone (random inputs of the real shapes): a training step (forward + backward +
Adam) on batches of 64 and no-grad inference on batches of 1024, at the papers' sizes and at the
demo configs' reduced sizes. Part 2, end to end: the loaded model's ``predict_window`` (read the tile and its
halo, cut patches from strided views, normalise, forward) on one 256 x 256 tile of each demo run
that exists (run the demo configs first). Prints the M3Fusion figure against the 9 h for 27 M
pixels of Benedetti et al. (2018).

    python bench/deep.py                      # CPU (or CUDA when present, with --device cuda)
    python bench/deep.py --device cuda --skip-end-to-end
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify import PeakRSS  # noqa: E402

from chain import config  # noqa: E402
from chain.models import model_type  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# input shapes as the demo runs give them (S2: 17 dates x 13 features; S1: 2 orbits x 2 pols, 28 dates)
SHAPES = {
    "multiresolcc": {"pan": {"channels": 1, "size": 32, "steps": 1}, "ms": {"channels": 4, "size": 8, "steps": 1}},
    "m3fusion": {"s2": {"channels": 17 * 13, "size": 1, "steps": 17}, "vhr": {"channels": 5, "size": 25, "steps": 1}},
    "twinns": {"s2": {"channels": 17 * 13, "size": 5, "steps": 17}, "s1": {"channels": 28 * 4, "size": 5, "steps": 28}},
}
DEMO_SIZES = {
    "multiresolcc": {"pan_channels": [16, 32, 64], "ms_channels": [32, 64, 128]},
    "m3fusion": {"rnn_units": 64, "cnn_channels": [32, 64]},
    "twinns": {"rnn_units": 16, "cnn_channels": [32, 64]},
}


def batch(shapes: dict, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.randn(n, s["channels"], s["size"], s["size"], device=device) for k, s in shapes.items()}


def rate(fn, n_items: int, repeat: int) -> float:
    fn()  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return n_items * repeat / (time.perf_counter() - t0)


def networks(device: torch.device, repeat: int) -> None:
    print(f"\n## Networks alone ({device}, {torch.get_num_threads()} threads)\n")
    print("| model | sizes | parameters | train samples/s (batch 64) | inference px/s (batch 1024) | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for kind, shapes in SHAPES.items():
        for label, sizes in (("paper", {}), ("demo", DEMO_SIZES[kind])):
            cfg = config.parse_model({"type": kind, **sizes})
            net = model_type(kind).network(cfg, 7, shapes).to(device)
            n_params = sum(p.numel() for p in net.parameters())
            opt = torch.optim.Adam(net.parameters(), 2e-4)
            x64, y64 = batch(shapes, 64, device), torch.randint(0, 7, (64,), device=device)
            x_inf = batch(shapes, 1024 if label == "demo" or kind == "multiresolcc" else 256, device)
            n_inf = next(iter(x_inf.values())).shape[0]

            def step(net=net, opt=opt, x64=x64, y64=y64):  # bound now: the loop rebinds them
                net.train()
                opt.zero_grad()
                out = net(x64)
                loss = torch.nn.functional.cross_entropy(out["fused"], y64)
                for a in out["aux"]:
                    loss = loss + 0.3 * torch.nn.functional.cross_entropy(a, y64)
                loss.backward()
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()

            def infer(net=net, x_inf=x_inf):
                net.eval()
                with torch.no_grad():
                    net(x_inf)["fused"].sum().item()

            with PeakRSS() as mem:
                tr = rate(step, 64, repeat)
                inf = rate(infer, n_inf, max(1, repeat // 2))
            print(f"| {kind} | {label} | {n_params / 1e6:.2f} M | {tr:,.0f} | {inf:,.0f} | {mem.peak / 2**20:,.0f} |")
            if kind == "m3fusion":
                hours = 27e6 / inf / 3600
                print(f"|   | 27 M px (Benedetti et al.: 9 h) | | | {hours:,.1f} h here | |")


def end_to_end() -> None:
    import json

    from rasterio.windows import Window

    from chain import models
    from chain.catalog import Catalog
    from chain.spec import FeatureSpec

    print("\n## End to end on a 256 x 256 tile of the demo runs (read + halo + patches + forward, 1 process)\n")
    print("| run | model | pixels | seconds | px/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for name in ("run_multiresolcc", "run_m3fusion", "run_twinns"):
        work = ROOT / "demo" / name
        mdir = work / "train" / "run_0"
        if not (mdir / "manifest.json").exists():
            print(f"| {name} | (missing: chain run configs/demo_{name[4:]}.yaml) | | | | |")
            continue
        cat = Catalog.from_dict(json.loads((work / "ingest" / "catalog.json").read_text()))
        spec = FeatureSpec.from_dict(json.loads((work / "features" / "features.json").read_text()))
        model = models.load(mdir, threads=torch.get_num_threads())
        win = Window(0, 0, min(256, cat.grid.width), min(256, cat.grid.height))
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            valid, proba, _ = model.predict_window(cat, spec, win)
            dt = time.perf_counter() - t0
        kind = models.read_manifest(mdir)["type"]
        print(f"| {name} | {kind} | {int(valid.sum()):,} | {dt:.1f} | {valid.sum() / dt:,.0f} | {mem.peak / 2**20:,.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--skip-end-to-end", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"# chain deep-model bench, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    networks(torch.device(args.device), args.repeat)
    if not args.skip_end_to_end:
        end_to_end()


if __name__ == "__main__":
    main()
