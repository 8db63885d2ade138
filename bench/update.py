"""The annual update measured on the two-year demo (configs/demo_update.yaml): what the carry-over finds, what
fine-tuning and pruning bring with few samples, and what the update costs against a full re-run.

    python bench/update.py                  # runs year 1 and the update when needed, then the study
    python bench/update.py --share 0.1 --full

Prints (and writes to <update workdir>/bench_update/results.json, the table to results.md):
- the flagged polygons' precision and recall against the generator's list of changed fields (changes.csv), and the
  siamese descriptors' retrieval mAP@5;
- this year's OA on the test pixels of the carried-over split, scored against the generator's year-2 truth, for
  (a) the network trained from scratch on every carried-over training polygon, (b) from scratch on ``--share`` of
  them, (c) last year's network fine-tuned on that share, (d) fine-tuned and pruned at 30 % and 50 % of the filters;
  with parameters, multiply-accumulates per pixel (torch-pruning's counter on a 256 x 256 window) and mapping speed;
- the update's step seconds against a full re-run of year 2 from scratch (``--full``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def chain(*args: str) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "chain.cli", *args, "-q"], check=True, cwd=ROOT)
    return time.time() - t0


def ledger_seconds(workdir: Path) -> dict[str, float]:
    out = {}
    for f in sorted((workdir / ".chain" / "ledger").glob("*.json")):
        rec = json.loads(f.read_text())
        if rec.get("status") == "done" and rec.get("seconds", 0) > 0.05:
            out[rec["step"]] = round(float(rec["seconds"]), 1)
    return out


def flagged_quality(work: Path, scene: Path) -> dict[str, Any]:
    import pandas as pd

    scores = pd.read_csv(work / "carryover" / "scores.csv")
    changed = set(pd.read_csv(scene / "changes.csv")["field_id"])
    truth = scores["field_id"].isin(changed)
    flag = scores["flagged"].astype(bool)
    tp = int((flag & truth).sum())
    return {"polygons": len(scores), "changed": int(truth.sum()), "flagged": int(flag.sum()), "true_positives": tp,
            "precision": tp / max(int(flag.sum()), 1), "recall": tp / max(int(truth.sum()), 1),
            "median_score_changed": float(scores.loc[truth, "score"].median()),
            "median_score_unchanged": float(scores.loc[~truth, "score"].median())}


def change_quality(work: Path, prev_scene: Path, scene: Path, grid: Any) -> dict[str, Any]:
    """The change map (confident pixels) against the generator's truth of the two years, pixel by pixel on the grid."""
    import rasterio

    with rasterio.open(work / "final" / "change" / "change.tif") as src:
        ch = src.read(1)
    rows, cols = np.indices(ch.shape)

    class P:
        row, col = rows.ravel(), cols.ravel()

    t1, t2 = truth_at(P, grid, prev_scene / "truth.tif"), truth_at(P, grid, scene / "truth.tif")
    counted = ch.ravel() > 0
    said = counted & (ch.ravel() // 256 != ch.ravel() % 256)
    true = t1 != t2
    tp = int((said & true).sum())
    return {"counted_px": int(counted.sum()), "said_changed_px": int(said.sum()), "truly_changed_counted_px": int((true & counted).sum()),
            "precision": tp / max(int(said.sum()), 1), "recall": tp / max(int((true & counted).sum()), 1)}


def truth_at(samples: Any, grid: Any, truth_tif: Path) -> np.ndarray:
    """The generator's class of this year at each sample pixel's centre."""
    import rasterio

    x, y = grid.affine * (samples.col + 0.5, samples.row + 0.5)
    with rasterio.open(truth_tif) as src:
        t = src.read(1)
        r, c = rasterio.transform.rowcol(src.transform, x, y)
    return t[np.clip(r, 0, t.shape[0] - 1), np.clip(c, 0, t.shape[1] - 1)].astype(np.int64)


def macs_per_px(net: Any, shapes: dict[str, Any], side: int = 256) -> float:
    import torch
    import torch_pruning as tp

    x = {k: torch.randn(1, int(v["channels"]), side, side) for k, v in shapes.items()}
    macs, _ = tp.utils.count_ops_and_params(net.eval(), (x,))
    return float(macs) / (side * side)


def variants(cfg: Any, share: float) -> list[tuple[str, dict[str, Any], bool, float, Any]]:
    from chain.update.options import PruneConfig

    crit = cfg.update.prune.criterion if cfg.update.prune else "l1"
    scratch_epochs = 16  # year 1's schedule
    return [("(a) from scratch, all", {"epochs": scratch_epochs}, False, 1.0, None),
            (f"(b) from scratch, {share:.0%}", {"epochs": scratch_epochs}, False, share, None),
            (f"(c) fine-tuned, {share:.0%}", {}, True, share, None),
            (f"(d) fine-tuned + pruned 30 %, {share:.0%}", {}, True, share, PruneConfig(ratio=0.3, criterion=crit)),
            (f"(d) fine-tuned + pruned 50 %, {share:.0%}", {}, True, share, PruneConfig(ratio=0.5, criterion=crit)),
            # a pruned network is still improving after the update's epochs: the same with twice as many
            (f"(d) fine-tuned + pruned 30 %, {share:.0%}, 2x epochs", {"epochs": 2 * cfg.model.epochs, "patience": None}, True, share,
             PruneConfig(ratio=0.3, criterion=crit)),
            (f"(d) fine-tuned + pruned 50 %, {share:.0%}, 2x epochs", {"epochs": 2 * cfg.model.epochs, "patience": None}, True, share,
             PruneConfig(ratio=0.5, criterion=crit)),
            (f"(d) fine-tuned + pruned 30 % (activation entropy), {share:.0%}, 2x epochs",
             {"epochs": 2 * cfg.model.epochs, "patience": None}, True, share, PruneConfig(ratio=0.3, criterion="activation_entropy"))]


def study(config: Path, share: float) -> list[dict[str, Any]]:
    from chain import config as cfgmod
    from chain import models, products
    from chain.evaluation import predict_samples
    from chain.runner import Context
    from chain.sampling import select_run
    from chain.training import fit_run
    from chain.update.previous import open_previous
    from chain.update.transfer import StartFrom
    from steps.compare_models import model_cost

    cfg = cfgmod.load(config)
    ctx = Context(cfg, cfg.workdir)
    prev = open_previous(cfg)
    samples, split, cat, spec = products.samples(ctx), products.splits(ctx), products.catalog(ctx), products.spec(ctx)
    test = select_run(samples, split, 0, "test", None, cfg.seed)
    truth = truth_at(test, cat.grid, Path(cfg.inputs.reference.path).parent / "truth.tif")
    out_dir = cfg.workdir / "bench_update"
    rows = []
    own = models.load(ctx.paths.model(0), "compiled", None)  # the update's own model: fine-tuned on every carried polygon
    pred = predict_samples(own, test, cat, spec, cfg.grid.tile_size_px)
    print(f"  {'the update run (fine-tuned, all carried-over polygons)':<58} OA {float((pred == truth).mean()):.3f} "
          f"(vs reference {float((pred == test.code).mean()):.3f})", flush=True)
    rows.append({"variant": "update run (fine-tuned, all)", "oa_truth": float((pred == truth).mean()),
                 "oa_reference": float((pred == test.code).mean())})
    for name, over, finetune, part, prune in variants(cfg, share):
        folder = out_dir / "".join(ch if ch.isalnum() else "_" for ch in name)
        shutil.rmtree(folder, ignore_errors=True)
        model = cfg.model.model_copy(update=over)
        start = StartFrom.of(prev.model(0), cfg.update.lr_factor, prune) if finetune else None
        t0 = time.time()
        fit_run(model, json.loads(model.model_dump_json()), 0, folder, "bench", samples=samples, split=split, cat=cat, spec=spec,
                seed=cfg.seed, scheme=cfg.split.scheme, max_pixels_per_class=cfg.sample.max_pixels_per_class,
                tile_size=cfg.grid.tile_size_px, reference=lambda: products.reference(ctx), start_from=start, train_share=part)
        seconds = time.time() - t0
        predictor = models.load(folder, "compiled", None)
        pred = predict_samples(predictor, test, cat, spec, cfg.grid.tile_size_px)
        manifest = json.loads((folder / "manifest.json").read_text())
        cost = model_cost(folder, predictor, cat, spec, cfg.grid.tile_size_px)
        net = getattr(getattr(predictor, "inner", predictor), "network", None)
        rows.append({"variant": name, "train_pixels": int(sum(manifest["train_pixels"].values())), "train_s": round(seconds, 1),
                     "oa_truth": float((pred == truth).mean()), "oa_reference": float((pred == test.code).mean()),
                     "parameters": cost["parameters"], "macs_per_px": macs_per_px(net, manifest["shapes"]) if net is not None else None,
                     "px_s": cost["inference_px_s"], "epochs": len(json.loads((folder / "history.json").read_text()))})
        r = rows[-1]
        print(f"  {name:<58} OA {r['oa_truth']:.3f} (vs reference {r['oa_reference']:.3f}), {r['parameters']:,} parameters, "
              f"{r['macs_per_px']:,.0f} MAC/px, {r['px_s']:,.0f} px/s, {r['train_pixels']:,} training px, {r['train_s']} s", flush=True)
    return rows


def write_table(path: Path, quality: dict[str, Any], carry: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The figures as a markdown table (what docs/update.md shows)."""
    lines = ["| model | OA (year-2 truth) | OA (carried labels) | parameters | MAC/px | px/s | training pixels | training s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        def fmt(key: str, spec: str = ",.0f", r: dict[str, Any] = r) -> str:
            return format(r[key], spec) if r.get(key) is not None else ""
        lines.append(f"| {r['variant']} | {r['oa_truth']:.3f} | {r['oa_reference']:.3f} | {fmt('parameters')} | {fmt('macs_per_px')} | "
                     f"{fmt('px_s')} | {fmt('train_pixels')} | {fmt('train_s', '.1f')} |")
    head = (f"Flagged {quality['flagged']} of {quality['polygons']} polygons: precision {quality['precision']:.2f}, recall "
            f"{quality['recall']:.2f} against the {quality['changed']} changed; mAP@5 {carry['map_at_5']:.3f} "
            f"(chance {carry['map_at_5_chance']:.3f}).\n\n")
    path.write_text(head + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo_update.yaml")
    ap.add_argument("--share", type=float, default=0.1, help="share of the carried-over training polygons for (b)-(d)")
    ap.add_argument("--full", action="store_true", help="also time a full re-run of year 2 from scratch")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from chain import config as cfgmod

    cfg = cfgmod.load(args.config)
    wall = chain("update", str(args.config))
    print(f"chain update (year 1 up to date first): {wall:.1f} s wall")
    update_steps = ledger_seconds(cfg.workdir)
    print(f"update steps (s): {update_steps} = {sum(update_steps.values()):.1f} s")
    scene = Path(cfg.inputs.reference.path).parent
    quality = flagged_quality(cfg.workdir, scene)
    carry = json.loads((cfg.workdir / "carryover" / "summary.json").read_text())
    print(f"flagged: {quality['flagged']} of {quality['polygons']} polygons; {quality['changed']} truly changed; precision "
          f"{quality['precision']:.2f}, recall {quality['recall']:.2f}; median score changed {quality['median_score_changed']:.3f}, "
          f"unchanged {quality['median_score_unchanged']:.3f}; mAP@5 {carry['map_at_5']:.3f} (chance {carry['map_at_5_chance']:.3f})")
    prev_scene = Path(cfgmod.load(cfg.update.previous_config).inputs.reference.path).parent if cfg.update.previous_config else None
    change = None
    if prev_scene is not None:
        from chain import products
        from chain.runner import Context

        change = change_quality(cfg.workdir, prev_scene, scene, products.catalog(Context(cfg, cfg.workdir)).grid)
        print(f"change map (pixels >= {cfg.update.min_confidence} % confident in both years): {change['said_changed_px']:,} of "
              f"{change['counted_px']:,} said changed; against the truth: precision {change['precision']:.2f}, recall "
              f"{change['recall']:.2f}")
    full = None
    if args.full:
        work = str(cfg.workdir) + "_full"
        shutil.rmtree(work, ignore_errors=True)
        full_wall = chain("run", str(args.config), "--set", "update=null", "--set", f"workdir={work}", "--set", "model.epochs=16",
                          "--set", "model.patience=6")
        full = ledger_seconds(Path(work))
        print(f"full re-run of year 2 (from scratch, year 1's 16 epochs): {full_wall:.1f} s wall; steps {full} = "
              f"{sum(full.values()):.1f} s")
    print(f"variants (test pixels of the carried-over split, OA against the year-2 truth), share {args.share:.0%}:")
    rows = study(args.config, args.share)
    out = cfg.workdir / "bench_update" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"flagged": quality, "map_at_5": carry["map_at_5"], "map_at_5_chance": carry["map_at_5_chance"],
                               "update_steps_s": update_steps, "full_rerun_steps_s": full, "change_map": change,
                               "variants": rows}, indent=1))
    write_table(out.parent / "results.md", quality, carry, rows)
    print(f"written {out} and {out.parent / 'results.md'}")


if __name__ == "__main__":
    main()
