"""Pixel time-series networks (TempCNN, L-TAE) against a patch network and a Random Forest: speed on this machine.

    python bench/temporal.py [--size 1024] [--dates 24] [--device cpu] [--skip-end-to-end]

Part 1, the networks alone on random inputs of a real year's shape (T dates x 13 channels: 10 bands +
3 indices): training samples/s at each paper's batch size, inference px/s (batch 4096), against
M3Fusion at its paper size (a patch network reading a 25 x 25 SPOT patch and the S2 series per
pixel). Part 2, end to end: a generated demo scene of ``--size``² px and ``--dates`` dates; RF, TempCNN
and L-TAE trained through the chain, then the classify step of each timed on the whole scene (read,
gap-fill, features, predict, write): px/s and the ratio to RF.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chain import config  # noqa: E402
from chain.models import model_type  # noqa: E402


def rate(fn, items: int, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return items * repeat / (time.perf_counter() - t0)


def networks(device: torch.device, dates: int, repeat: int) -> None:
    series = {"s2": {"channels": 13 * dates, "size": 1, "steps": dates, "days": list(range(3, 365, 365 // dates))[:dates]}}
    cases = [("tempcnn", {}, series, 32), ("ltae", {}, series, 128),
             ("m3fusion", {}, {"s2": {"channels": 13 * dates, "size": 1, "steps": dates},
                              "vhr": {"channels": 5, "size": 25, "steps": 1}}, 64)]
    print(f"\n## Networks alone ({device}, {torch.get_num_threads()} threads, {dates} dates x 13 channels, paper sizes)\n")
    print("| model | parameters | train samples/s (paper batch) | inference px/s (batch 4096; M3Fusion 256) |")
    print("|---|---|---|---|")
    inference = {}
    for kind, sizes, shapes, batch in cases:
        cfg = config.parse_model({"type": kind, **sizes})
        net = model_type(kind).network(cfg, 9, shapes).to(device)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        xb = {k: torch.randn(batch, s["channels"], s["size"], s["size"], device=device) for k, s in shapes.items()}
        yb = torch.randint(0, 9, (batch,), device=device)
        n_inf = 4096 if kind != "m3fusion" else 256
        xi = {k: torch.randn(n_inf, s["channels"], s["size"], s["size"], device=device) for k, s in shapes.items()}

        def step(net=net, opt=opt, xb=xb, yb=yb):  # type: ignore[no-untyped-def]
            net.train()
            opt.zero_grad()
            out = net(xb)
            loss = torch.nn.functional.cross_entropy(out["fused"], yb)
            for a in out["aux"]:
                loss = loss + 0.3 * torch.nn.functional.cross_entropy(a, yb)
            loss.backward()
            opt.step()

        def infer(net=net, xi=xi):  # type: ignore[no-untyped-def]
            net.eval()
            with torch.no_grad():
                net(xi)["fused"].sum().item()

        tr = rate(step, batch, repeat * 4)
        inference[kind] = rate(infer, n_inf, repeat)
        params = sum(p.numel() for p in net.parameters())
        print(f"| {kind} | {params / 1e6:.2f} M | {tr:,.0f} | {inference[kind]:,.0f} |")
    for kind in ("tempcnn", "ltae"):
        print(f"\n{kind} infers {inference[kind] / inference['m3fusion']:.0f}x the px/s of M3Fusion (paper sizes).", end="")
    print()


def end_to_end(size: int, dates: int) -> None:
    from chain.demo import generate
    from chain.runner import run_pipeline
    from chain.spec import FeatureSpec  # noqa: F401  (imported here so that import time is not timed)

    root = ROOT / "demo" / f"bench_temporal_{size}_{dates}"
    scene = root / "scene"
    if not (scene / "reference.gpkg").exists():
        generate(scene, size_px=size, n_dates=dates, n_fields=max(120, size // 3), seed=0, difficulty="hard")
    print(f"\n## End to end: classify step on a {size}² scene, {dates} dates, 2 worker processes x 1 thread\n")
    print("| model | classify s | Mpx/s | vs RF |")
    print("|---|---|---|---|")
    base = None
    for kind, model in (("rf", {"type": "rf"}), ("tempcnn", {"type": "tempcnn", "max_samples_per_class": 1000}),
                        ("ltae", {"type": "ltae", "max_samples_per_class": 1000, "epochs": 30, "patience": 5})):
        data = {"workdir": str(root / f"run_{kind}"), "seed": 0,
                "inputs": {"s2": {"path": str(scene / "s2")}, "reference": {"path": str(scene / "reference.gpkg"), "name_field": "name"}},
                "grid": {"tile_size_px": 256}, "gapfill": {"interval_days": 10}, "split": {"scheme": "64/16/20"},
                "sample": {"max_pixels_per_class": 3000}, "model": model, "regularize": {"enabled": False},
                "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "4GiB"}}
        cfg = config.parse(data, base_dir=root)
        run_pipeline(cfg, to_step="compare_models")
        t0 = time.time()
        run_pipeline(cfg, from_step="classify", to_step="classify")
        secs = time.time() - t0
        mpx = size * size / secs / 1e6
        base = base or mpx
        print(f"| {kind} | {secs:.1f} | {mpx:.3f} | {mpx / base:.2f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dates", type=int, default=36, help="dates of the series for part 1 (a year every 10 days)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024, help="scene side in px for part 2")
    ap.add_argument("--scene-dates", type=int, default=24)
    ap.add_argument("--skip-end-to-end", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"# chain temporal-model bench, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, device {args.device}")
    networks(torch.device(args.device), args.dates, args.repeat)
    if not args.skip_end_to_end:
        end_to_end(args.size, args.scene_dates)


if __name__ == "__main__":
    main()
