"""The update's report: what changed since last year's map (on confident pixels), what was carried over, where the
models come from."""

from __future__ import annotations

import html
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from chain.runner import Context
    from chain.update.previous import PreviousRun

log = logging.getLogger(__name__)


def lineage(ctx: Context) -> list[dict[str, Any]]:
    """Per model of this year: its type and where it comes from (fine-tuned from last year's model, pruned, retrained)."""
    from chain import products

    rows = []
    for run in products.runs(ctx):
        man = json.loads((ctx.paths.model(run) / "manifest.json").read_text())
        lin = man.get("lineage") or {}
        pruned = lin.get("pruned") or {}
        rows.append({"run": run, "type": man["type"], "origin": "fine-tuned" if lin else "trained from scratch",
                     "from": lin.get("fine_tuned_from"), "pruned": pruned.get("ratio"), "criterion": pruned.get("criterion"),
                     "parameters": pruned.get("parameters_after") or man.get("parameters"),
                     "parameters_before": pruned.get("parameters_before"), "train_pixels": sum(man.get("train_pixels", {}).values())})
    return rows


def changes_and_report(ctx: Context, prev: PreviousRun) -> dict[str, Any]:
    from chain import products
    from chain.atomic import write_json, write_text
    from chain.compare import compare_maps
    from chain.html_report import CSS, html_table, png_data_uri

    up = ctx.cfg.update
    assert up is not None
    p = ctx.paths
    old_map, old_conf = prev.map()
    res = compare_maps(old_map, p.class_map(0), p.change_dir, confident=(old_conf, p.confidence_map(0), up.min_confidence))
    carry = json.loads(p.carry_summary.read_text())
    models = lineage(ctx)
    matrix, codes = res["matrix"], res["codes"]
    transitions = sorted(((int(matrix[i, j]), codes[i], codes[j]) for i, j in zip(*np.nonzero(matrix), strict=False) if i != j),
                         reverse=True)[:10]
    summary = {"previous": str(prev.workdir), "pixels_compared": res["pixels"], "changed": res["changed"],
               "changed_share": res["changed"] / max(res["pixels"], 1), "min_confidence": up.min_confidence,
               "top_transitions": [{"from": int(a), "to": int(b), "pixels": n} for n, a, b in transitions],
               "carried": carry["carried"], "flagged": carry["flagged"], "map_at_5": carry["map_at_5"], "models": models}
    write_json(p.change_dir / "summary.json", summary)
    names = {c: v["name"] for c, v in products.classes(ctx).items()}
    metrics = json.loads(p.metrics.read_text())["summary"] if p.metrics.exists() else None
    scores_png = p.step("carryover") / "scores.png"
    img = png_data_uri(scores_png.read_bytes()) if scores_png.exists() else ""
    page = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>chain update</title><style>{CSS}</style></head><body>",
            "<h1>Annual update</h1>",
            f"<p>Last year's run: {html.escape(str(prev.workdir))}<br>This year's: {html.escape(str(ctx.workdir))}</p>",
            *([f"<p>This year's map: OA {metrics['oa']['mean']:.3f}, kappa {metrics['kappa']['mean']:.3f} on the carried-over "
               "reference's test polygons (report.html).</p>"] if metrics else []),
            "<h2>Reference carried over</h2>",
            f"<p>{carry['carried']} of {carry['polygons']} polygons carried over, <b>{carry['flagged']} flagged</b> as changed "
            f"(score below {carry['threshold']:.3f}, {html.escape(carry['threshold_rule'])}) in "
            f"<code>final/reference_flagged.gpkg</code> for review. Each polygon is scored by a siamese encoder that never saw it "
            f"({carry['folds']} folds); retrieval of each polygon's own place among its fold's: mAP@5 {carry['map_at_5']:.3f} "
            f"(chance {carry['map_at_5_chance']:.3f}).</p>",
            f"<img alt='score distribution' src='{img}'>" if img else "",
            html_table(["class", "flagged polygons"], [[f"{c} {names.get(int(c), '')}", n] for c, n in carry["flagged_per_class"].items()]),
            "<h2>Models</h2>",
            html_table(["run", "type", "origin", "from", "pruned", "criterion", "parameters", "before pruning", "training pixels"],
                       [[m["run"], m["type"], m["origin"], html.escape(str(m["from"] or "")), m["pruned"] or "", m["criterion"] or "",
                         f"{m['parameters']:,}" if m["parameters"] else "", f"{m['parameters_before']:,}" if m["parameters_before"] else "",
                         f"{m['train_pixels']:,}"] for m in models]),
            "<h2>What changed since last year</h2>",
            f"<p>{res['pixels']:,} pixels at least {up.min_confidence} % confident in both years' maps; {res['changed']:,} changed "
            f"({100 * summary['changed_share']:.1f} %). Matrix, change raster (from × 256 + to) and heatmap in "
            "<a href='change/change.html'>change/</a>.</p>",
            html_table(["from", "to", "pixels"], [[f"{a} {names.get(a, '')}", f"{b} {names.get(b, '')}", f"{n:,}"] for n, a, b in transitions]),
            "</body></html>"]
    write_text(p.update_report, "\n".join(page))
    log.info("changes: %d of %d confident pixels changed since last year (%.1f %%); report %s", res["changed"], res["pixels"],
             100 * summary["changed_share"], p.update_report)
    return summary
