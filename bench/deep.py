"""Benchmark of the patch models: training samples/s, inference pixels/s and peak memory, on this machine.

Part 1, the networks alone (random inputs of the real shapes): a training step (forward + backward +
Adam) on batches of 64 and no-grad inference on batches of 1024, at the papers' sizes and at the
demo configs' reduced sizes. Part 2, end to end: the loaded model's ``predict_window`` (read the tile and its
halo, cut patches, normalise, forward) on one 256 x 256 tile of each demo run that exists (run
the demo configs first). Part 3, the inference pipeline per stage (read, upload, cut, forward; µs
per pixel on one CPU thread) at demo and paper sizes, against cutting and normalising in numpy, and
the projection of the 27 M pixel M3Fusion map of Benedetti et al. (2018) (9 h on their hardware) on
a 16-core + 1 GPU node. Part 4, peak memory of preparing a paper-size TWINNS training set.

    python bench/deep.py                      # CPU (or CUDA when present, with --device cuda)
    python bench/deep.py --device cuda --skip-end-to-end
    python bench/deep.py --pipeline-only      # part 3 alone
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


def demo_run(name: str, columns: int):
    """(model folder, catalogue, feature spec, 256 x 256 window) of the demo run ``name``; None, with a table row
    saying which config to run, when it has not been run."""
    import json

    from rasterio.windows import Window

    from chain.catalog import Catalog
    from chain.spec import FeatureSpec

    work = ROOT / "demo" / name
    mdir = work / "train" / "run_0"
    if not (mdir / "manifest.json").exists():
        print(f"| {name} | (missing: chain run configs/demo_{name[4:]}.yaml) |" + " |" * (columns - 2))
        return None
    cat = Catalog.from_dict(json.loads((work / "ingest" / "catalog.json").read_text()))
    spec = FeatureSpec.from_dict(json.loads((work / "features" / "features.json").read_text()))
    return mdir, cat, spec, Window(0, 0, min(256, cat.grid.width), min(256, cat.grid.height))


def end_to_end() -> None:
    from chain import models

    print("\n## End to end on a 256 x 256 tile of the demo runs (read + halo + patches + forward, 1 process)\n")
    print("| run | model | pixels | seconds | px/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for name in ("run_multiresolcc", "run_m3fusion", "run_twinns"):
        found = demo_run(name, 6)
        if found is None:
            continue
        mdir, cat, spec, win = found
        model = models.load(mdir, threads=torch.get_num_threads())
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            valid, proba, _ = model.predict_window(cat, spec, win)
            dt = time.perf_counter() - t0
        kind = models.read_manifest(mdir)["type"]
        print(f"| {name} | {kind} | {int(valid.sum()):,} | {dt:.1f} | {valid.sum() / dt:,.0f} | {mem.peak / 2**20:,.0f} |")


def training_memory(n: int) -> None:
    """Peak RSS of preparing a paper-size TWINNS training set of ``n`` samples (float16 patches, as the chain caches
    them): streamed normalisation statistics + the normalised float16 tensors + a few training steps."""
    import numpy as np
    import psutil

    from chain.deep import trainer

    shapes = SHAPES["twinns"]
    rng = np.random.default_rng(0)
    patches = {}
    for k, s in shapes.items():
        patches[k] = np.empty((n, s["channels"], s["size"], s["size"]), np.float16)
        for a in range(0, n, 4096):
            m = min(4096, n - a)
            patches[k][a:a + m] = rng.standard_normal((m, s["channels"], s["size"], s["size"]), dtype=np.float32) * 300 + 1000
    held = sum(v.nbytes for v in patches.values())
    net = model_type("twinns").network(config.parse_model({"type": "twinns"}), 7, shapes)
    opt = torch.optim.Adam(net.parameters(), 2e-4)
    y = torch.from_numpy(rng.integers(0, 7, n))
    base = psutil.Process().memory_info().rss
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        norm = trainer.Normaliser.fit(patches)
        t1 = time.perf_counter()
        tensors = trainer._to_tensors(patches, norm)
        t2 = time.perf_counter()
        net.train()
        for s in range(0, 3 * 64, 64):  # the first steps: batches cast to float32 on the way in
            opt.zero_grad()
            out = net({k: v[s:s + 64].float() for k, v in tensors.items()})
            torch.nn.functional.cross_entropy(out["fused"], y[s:s + 64]).backward()
            opt.step()
    before = held // 2 * (8 + 4)  # the former Normaliser.fit: a float64 copy of the whole set, then a float32 one
    print(f"\n## Training memory at paper size (TWINNS, {n:,} samples of {sum(v[0].size for v in patches.values()):,} values)\n")
    print("| float16 patches held | statistics (streamed) | normalised float16 tensors | peak RSS above the held patches | "
          "the former whole-set float64 + float32 copies |")
    print("|---|---|---|---|---|")
    print(f"| {held / 2**30:.2f} GiB | {t1 - t0:.1f} s | {t2 - t1:.1f} s | {(mem.peak - base) / 2**30:.2f} GiB | "
          f"{before / 2**30:.2f} GiB |")


PAPER_PX = 27e6  # Benedetti et al. 2018: the M3Fusion map of Reunion island, 9 h on their hardware
NODE_CORES = 16  # the projected node: 16 cores + 1 GPU
GPU_SUSTAINED = 0.3 * 989e12  # FLOP/s assumed when no GPU is here: 30 % of an H100/H200's dense bf16 peak


def _tile_stages(model, cat, spec, win, repeat: int) -> tuple[int, dict[str, float]]:
    """Pixels of the tile and seconds per stage (summed over ``repeat`` passes after a warm-up pass)."""
    model.predict_window(cat, spec, win)  # warm-up: numba kernels, file caches, allocator
    model.seconds.clear()
    n = 0
    for _ in range(repeat):
        valid, _, _ = model.predict_window(cat, spec, win)
        n += int(valid.sum())
    return n, dict(model.seconds)


def _host_stages(model, norm, cat, spec, win) -> dict[str, float]:
    """What the CPU did per tile before the device pipeline: cut with numpy, normalise with the Normaliser."""
    import numpy as np

    from chain.deep.inputs import TileBlock

    block = TileBlock(cat, spec, model.inputs, win)
    rr, cc = np.nonzero(block.valid)
    rows, cols = rr + int(win.row_off), cc + int(win.col_off)
    t0 = time.perf_counter()
    parts = [block.gather(rows[s:s + model.batch], cols[s:s + model.batch]) for s in range(0, len(rr), model.batch)]
    t1 = time.perf_counter()
    for patches in parts:
        for k, v in patches.items():
            norm.apply(k, v)
    return {"cut (numpy)": t1 - t0, "normalise (numpy)": time.perf_counter() - t1}


def pipeline(device: torch.device, repeat: int) -> None:
    """Per-stage profile of the inference pipeline on one 256 x 256 tile of each demo run, one CPU thread, and the
    projection of the 27 M px M3Fusion map on a 16-core + 1 GPU node."""
    from torch.utils.flop_counter import FlopCounterMode

    from chain import models
    from chain.deep.export import served
    from chain.deep.pipeline import DevicePatchPredictor
    from chain.deep.trainer import Normaliser

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core costs: what one of the node's cores does per pixel
    print(f"\n## Inference pipeline per stage (µs per pixel, one CPU thread; forward on {device})\n")
    print("read = sources + grid features of the tile and halo (CPU); upload = to the device (pinned, async on CUDA); "
          "cut = patches from unfold views (on the device); forward = normalisation layer + network + softmax. "
          "CPU-side preparation: read + upload on a GPU node (cut and normalise run on the GPU), read + upload + cut on "
          "a CPU-only node; before the device pipeline it was read + cut + normalise in numpy.\n")
    print("| run | network | pixels | read | upload | cut | forward | CPU-side prep., GPU node | CPU-only node | before |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for name in ("run_m3fusion", "run_multiresolcc", "run_twinns"):
        found = demo_run(name, 10)
        if found is None:
            continue
        mdir, cat, spec, win = found
        manifest = models.read_manifest(mdir)
        nm = manifest["normalisation"]
        norm = Normaliser(nm["mean"], nm["std"], nm.get("period", {}))
        demo = models.load(mdir, threads=None)
        demo = getattr(demo, "inner", demo)
        kind = manifest["type"]
        paper_net = model_type(kind).network(config.parse_model({"type": kind}), len(manifest["classes"]), manifest["shapes"])
        paper = DevicePatchPredictor(demo.inputs, manifest["classes"], demo.batch,
                                     served(paper_net, norm, manifest["shapes"], [i.name for i in demo.inputs]).to(device), device)
        host = _host_stages(demo, norm, cat, spec, win)
        demo.device = device
        demo.served.to(device)
        n, sec = _tile_stages(demo, cat, spec, win, repeat)
        npx = n // repeat
        us = {k: v / n * 1e6 for k, v in sec.items()}
        # paper sizes: the same tile's inputs (read, upload and cut do not depend on the widths); the forward timed on
        # its first pixels only, since a paper-size network takes minutes per tile on one CPU thread
        tile = paper.read(cat, spec, win)
        m = min(tile.n, 1024 if device.type == "cuda" else 128)
        with torch.no_grad(), paper._autocast():
            paper.served(*tile.cut(0, min(m, 16)))  # warm-up
            t0 = time.perf_counter()
            for s in range(0, m, 64):
                paper.served(*tile.cut(s, min(s + 64, m))).float().sum().item()
            fwd = (time.perf_counter() - t0) / m * 1e6
        for label, u in (("demo sizes", us), ("paper sizes", {**us, "forward": fwd})):
            print(f"| {name} | {kind}, {label} | {npx:,} | {u['read']:.1f} | {u['upload']:.2f} | {u['cut']:.1f} | "
                  f"{u['forward']:.1f} | **{u['read'] + u['upload']:.1f}** | {u['read'] + u['upload'] + u['cut']:.1f} | "
                  f"{u['read'] + sum(host.values()) / npx * 1e6:.1f} |")
            rows[(kind, label)] = u
        if kind == "m3fusion":
            x = {i.name: torch.randn(8, manifest["shapes"][i.name]["channels"], i.size, i.size) for i in demo.inputs}
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                paper_net.eval()(x)
            rows["flop"] = fc.get_total_flops() / 8
    torch.set_num_threads(threads)
    if ("m3fusion", "paper sizes") in rows:
        us, flop = rows[("m3fusion", "paper sizes")], rows["flop"]
        cpu_s = PAPER_PX * (us["read"] + us["upload"]) * 1e-6 / NODE_CORES
        measured = device.type == "cuda"
        gpu_s = PAPER_PX * us["forward"] * 1e-6 if measured else PAPER_PX * flop / GPU_SUSTAINED
        print(f"\n**Projection, the 27 M px M3Fusion map (paper sizes, {flop / 1e9:.2f} GFLOP/px) on a {NODE_CORES}-core + 1 GPU "
              f"node**: CPU side (read + upload, {us['read'] + us['upload']:.1f} µs/px per core, {NODE_CORES} cores in parallel) "
              f"{cpu_s / 60:.1f} min; GPU side ({'measured here' if measured else 'at 30 % of a 989 TFLOP/s bf16 peak, not measured: no GPU here'}) "
              f"{gpu_s / 60:.1f} min; the two overlap (prefetch, workers), so about {max(cpu_s, gpu_s) / 60:.1f} min "
              f"(target < 10 min; Benedetti et al.: 9 h). On this machine's CPU alone: "
              f"{PAPER_PX * (us['read'] + us['cut'] + us['forward']) * 1e-6 / 3600:.1f} core-hours.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--skip-end-to-end", action="store_true")
    ap.add_argument("--pipeline-only", action="store_true", help="only the per-stage profile and the projection")
    ap.add_argument("--training-samples", type=int, default=100_000, help="paper-size training memory: samples (0: skip)")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"# chain deep-model bench, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    if not args.pipeline_only:
        networks(torch.device(args.device), args.repeat)
        if not args.skip_end_to_end:
            end_to_end()
    pipeline(torch.device(args.device), max(1, args.repeat // 2))
    if args.training_samples and not args.pipeline_only:
        training_memory(args.training_samples)


if __name__ == "__main__":
    main()
