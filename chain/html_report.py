"""final/report.html: one self-contained page (images embedded) that opens offline in any browser."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from chain.atomic import write_text
from chain.metrics import area_estimates
from chain.paths import confusion_png_name
from chain.report import pyplot


def png_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return png_data_uri(buf.getvalue())


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def class_pixel_counts(map_path: Path, nodata: int = 0) -> dict[int, int]:
    """Pixels per class, block by block (never the whole map in memory)."""
    counts = np.zeros(256, dtype=np.int64)
    with rasterio.open(map_path) as src:
        for _, window in src.block_windows(1):
            counts += np.bincount(src.read(1, window=window).ravel(), minlength=256)[:256]
    return {c: int(n) for c, n in enumerate(counts) if n and c != nodata}


def quicklook(map_path: Path, classes: dict[int, dict], max_px: int = 900) -> str:
    plt = pyplot()
    from matplotlib.patches import Patch

    with rasterio.open(map_path) as src:
        k = max(1, int(np.ceil(max(src.width, src.height) / max_px)))
        arr = src.read(1, out_shape=(max(1, src.height // k), max(1, src.width // k)), resampling=Resampling.nearest)
    lut = np.zeros((256, 4))
    for c, v in classes.items():
        lut[c] = [*(np.array(v["color"][:3]) / 255), 1]
    fig, ax = plt.subplots(figsize=(8, 8 * arr.shape[0] / arr.shape[1] + 0.2))
    ax.imshow(lut[arr], interpolation="nearest")
    ax.set_axis_off()
    present = sorted(c for c in np.unique(arr) if c in classes)
    ax.legend(handles=[Patch(color=lut[c][:3], label=f"{c} {classes[c]['name']}") for c in present],
              loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return png_uri(fig)


def prf_figure(summary: dict[str, Any], labels: list[int], ticks: list[str]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 3.6))
    x = np.arange(len(labels))
    for k, (metric, color) in enumerate((("precision", "#4c72b0"), ("recall", "#dd8452"), ("f1", "#55a868"))):
        means = [summary["per_class"][str(c)][metric]["mean"] for c in labels]
        cis = [np.nan_to_num(summary["per_class"][str(c)][metric]["ci95"]) for c in labels]
        ax.bar(x + (k - 1) * 0.27, means, 0.27, yerr=cis, capsize=2, label=metric, color=color)
    ax.set_xticks(x, ticks, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (mean ± 95 % CI over runs)")
    ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)  # above the bars, never over them
    fig.tight_layout()
    return png_uri(fig)


def comparison_figure(models: list[dict[str, Any]]) -> str:
    plt = pyplot()
    metrics = [("oa", "OA"), ("kappa", "kappa"), ("f1_mean", "mean F1")]
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.45 * len(models) * len(metrics) / 2))
    width = 0.8 / len(metrics)
    for j, (key, label) in enumerate(metrics):
        y = np.arange(len(models)) + j * width
        mean = [m["summary"][key]["mean"] for m in models]
        ci = np.nan_to_num([m["summary"][key]["ci95"] for m in models])
        ax.barh(y, mean, height=width, xerr=ci, label=label, capsize=2)
    ax.set_yticks(np.arange(len(models)) + width, [m["name"] for m in models])
    ax.invert_yaxis()
    lo = np.nanmin([m["summary"][k]["mean"] for m in models for k, _ in metrics])
    ax.set_xlim(max(0.0, lo - 0.1), 1.0)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    uri = png_uri(fig)
    plt.close(fig)
    return uri


def nan_for_null(obj: Any) -> Any:
    """The numbers strict JSON wrote as null (undefined: one run's CI, a class without validation pixels), as NaN again."""
    if obj is None:
        return float("nan")
    if isinstance(obj, dict):
        return {k: nan_for_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_for_null(v) for v in obj]
    return obj


def _fmt(agg: dict[str, Any]) -> str:
    from chain.report import mean_ci_text

    return mean_ci_text(agg).replace("+-", "±")


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}.note{color:#666;font-size:.9em}"""


def calibration_section(rows: list[dict[str, Any]]) -> str:
    """ECE before/after temperature scaling per run, and run 0's reliability diagram."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    for key, style in (("before", "o-"), ("after", "s-")):
        r = rows[0][key]
        has = np.asarray(r["n"]) > 0
        ax.plot(np.asarray(r["confidence"])[has], np.asarray(r["accuracy"])[has], style, ms=4,
                label=f"{key} (ECE {r['ece']:.3f})")
    ax.set_xlabel("confidence (max probability)"), ax.set_ylabel("accuracy"), ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    uri = png_uri(fig)
    plt.close(fig)
    table = html_table(["run", "temperature", "ECE before", "ECE after", "evaluation pixels", "fitted on"],
                       [[x["run"], f"{x['temperature']:.2f}", f"{x['before']['ece']:.3f}", f"{x['after']['ece']:.3f}",
                         x["before"]["pixels"], f"{x['fitted_on']} ({x['fit_pixels']} px)"] for x in rows])
    return ("<h2>Calibrated confidence</h2>" + table + f"<img alt='reliability diagram' src='{uri}'>"
            "<p class='note'>The confidence maps and probabilities are temperature-scaled: softmax(log p / T), with T fitted "
            "on pixels the model did not learn from; classes are unchanged. ECE: the mean gap between confidence and accuracy "
            "over confidence bins, on the evaluation pixels (run 0 in the diagram).</p>")


def objects_section(final: Path, objects: dict[str, Any], classes: dict[int, dict]) -> str:
    """Object-based runs: the object map against the pixel map of the same runs, in figures and side by side."""
    from chain.report import mean_ci_text

    s = objects["summary"]
    what = [("oa", "OA (pixels of the evaluation polygons)"), ("kappa", "kappa"), ("f1_mean", "mean F1"),
            ("object_accuracy", "evaluation objects correctly labelled"), ("regions_per_km2", "regions per km²"),
            ("mean_region_m2", "mean region size (m²)")]
    rows = [[label] + [mean_ci_text(s[kind][k]).replace("+-", "±") if k in s.get(kind, {}) else "—" for kind in ("objects", "pixels")]
            for k, label in what]
    seg, obj = objects["segments"], objects["objects"]
    mixed = objects["runs"]["objects"][0]["left_out_mixed"]
    out = ("<h2>Objects vs pixels</h2>" + html_table(["", "object map", "pixel map"], rows)
           + f"<p class='note'>{seg['n_objects']:,} objects ({html.escape(seg['method'])}, mean {seg['mean_area_m2']:,.0f} m², "
           f"{seg['objects_per_km2']:,.1f} per km²), {obj['labelled']:,} labelled by a reference polygon; in run 0, {mixed} "
           f"object(s) touching polygons of different parts of the split were left out of training and evaluation. "
           f"Both maps come from the same model type trained on the same split, on object features or on pixels; "
           f"fragmentation counts 4-connected regions of one class.</p>")
    pixel0 = final / "pixels" / "Classif_Seed_0.tif"
    if pixel0.exists():
        out += ("<div style='display:flex;gap:1em'>"
                f"<figure><img alt='object map' src='{quicklook(final / 'Classif_Seed_0.tif', classes, 520)}'>"
                "<figcaption>objects, run 0</figcaption></figure>"
                f"<figure><img alt='pixel map' src='{quicklook(pixel0, classes, 520)}'>"
                "<figcaption>pixels, run 0</figcaption></figure></div>")
    return out


def build(final: Path, metrics: dict[str, Any], classes: dict[int, dict], context: dict[str, Any]) -> Path:
    """Write final/report.html from metrics.json content, the maps and a run ``context`` dict."""
    metrics, context = nan_for_null(metrics), nan_for_null(context)  # strict JSON writes undefined values as null
    labels: list[int] = metrics["labels"]
    names = {int(k): v for k, v in metrics["names"].items()}
    ticks = [f"{c} {names.get(c, '')}".strip() for c in labels]
    runs = metrics["runs"]
    s = metrics["summary"]
    parts = [f"<h1>Land-cover map — {html.escape(str(context.get('title', 'chain run')))}</h1>",
             f"<p class='note'>Generated {dt.datetime.now():%Y-%m-%d %H:%M} by chain {html.escape(str(context.get('version', '')))}.</p>"]
    if context.get("update_of"):  # an annual update: what was carried over and what changed is on its own page
        parts.append(f"<p>An update of last year's run ({html.escape(str(context['update_of']))}): the reference carried over, "
                     "the models' lineage and the change since last year are in <a href='update.html'>update.html</a>.</p>")

    parts.append("<h2>Run summary</h2>" + html_table(["item", "value"], [[k, v] for k, v in context.get("summary", {}).items()]))
    durations = context.get("durations", {})
    if durations:
        parts.append(html_table(["step", "duration (s)"], [[k, v if isinstance(v, str) else f"{v:.1f}"] for k, v in durations.items()]))

    map0 = final / "Classif_Seed_0.tif"
    parts.append("<h2>Map (run 0)</h2>" + f"<img alt='map quick-look' src='{quicklook(map0, classes)}'>")

    rows = [["OA", _fmt(s["oa"])], ["Kappa", _fmt(s["kappa"])]]
    header = ["metric", "raw map"]
    if "regularized" in metrics:
        rs = metrics["regularized"]["summary"]
        header.append("regularized map")
        rows = [[r[0], r[1], _fmt(rs[k])] for r, k in zip(rows, ("oa", "kappa"), strict=False)]
    parts.append(f"<h2>Accuracy ({len(runs)} run(s), evaluated on the '{metrics['evaluated_on']}' polygons; mean ± 95 % CI)</h2>"
                 + html_table(header, rows))
    parts.append(html_table(["class", "precision", "recall", "F1", "reference pixels (run 0)"],
                        [[t, _fmt(s["per_class"][str(c)]["precision"]), _fmt(s["per_class"][str(c)]["recall"]),
                          _fmt(s["per_class"][str(c)]["f1"]), runs[0]["per_class"][str(c)]["n_reference"]]
                         for t, c in zip(ticks, labels, strict=True)]))
    parts.append(f"<img alt='per-class scores' src='{prf_figure(s, labels, ticks)}'>")
    for r, run in enumerate(runs):
        # the figure validate wrote beside the maps (report.write_reports), not drawn again: 0.7 s a run in matplotlib
        png = png_data_uri((final / confusion_png_name(r)).read_bytes())
        parts.append(f"<h3>Confusion matrix, run {r} (OA {run['oa']:.3f}, kappa {run['kappa']:.3f})</h3>"
                     f"<img alt='confusion matrix run {r}' src='{png}'>")

    counts = class_pixel_counts(map0)
    pixel_area_ha = context.get("pixel_area_m2", 100.0) / 10_000
    map_px = np.array([counts.get(c, 0) for c in labels], dtype=np.float64)
    est = area_estimates(np.array(runs[0]["confusion"]), map_px, pixel_area_ha)
    parts.append("<h2>Class areas (run 0)</h2>" + html_table(
        ["class", "mapped pixels", "mapped area (ha)", "error-adjusted area (ha)", "95 % CI (ha)"],
        [[t, int(p), f"{m:.1f}", f"{a:.1f}", f"± {ci:.1f}"]
         for t, p, m, a, ci in zip(ticks, map_px, est["mapped"], est["adjusted"], est["ci"], strict=True)]))
    parts.append("<p class='note'>Error-adjusted areas follow Olofsson et al. (2014), with the map classes as strata and the "
                 "validation pixels as the sample. Those pixels come from whole polygons, not from a random sample of each "
                 "map class: treat the intervals as indicative.</p>")

    models = context.get("models", [])
    if models:
        parts.append("<h2>Models</h2>" + html_table(["model", "parameters", "OA", "kappa"],
                                                [[m["name"], m["params"], _fmt(s["oa"]), _fmt(s["kappa"])] for m in models]))
    curves = [Path(c) for c in context.get("training_curves", []) if Path(c).exists()]
    if curves:
        imgs = "".join(f"<figure><img alt='training curves run {i}' src='{png_data_uri(c.read_bytes())}'>"
                       f"<figcaption>run {i}</figcaption></figure>"
                       for i, c in enumerate(curves))
        parts.append("<h2>Training curves</h2>" + imgs + "<p class='note'>Loss per epoch (and validation accuracy with the "
                     "64/16/20 split); the weights kept are those of the best epoch.</p>")
    comparison = context.get("comparison") or {}
    if comparison.get("models"):
        def num(v: Any) -> str:
            return "—" if v is None else f"{v:,.0f}"

        rows = [[m["name"], ", ".join(f"{k}={v}" for k, v in m["params"].items() if k != "type"), _fmt(m["summary"]["oa"]),
                 _fmt(m["summary"]["kappa"]), _fmt(m["summary"]["f1_mean"]), num((m.get("cost") or {}).get("parameters")),
                 num((m.get("cost") or {}).get("train_seconds")), num((m.get("cost") or {}).get("inference_px_s"))]
                for m in comparison["models"]]
        names = comparison.get("class_names") or {}
        per_class = ""
        if names and all("f1_per_class" in m["summary"] for m in comparison["models"]):
            per_class = "<h3>F1 per class</h3>" + html_table(
                ["class", *[m["name"] for m in comparison["models"]]],
                [[f"{c} {n}", *[f"{m['summary']['f1_per_class'].get(c, float('nan')):.3f}" for m in comparison["models"]]]
                 for c, n in sorted(names.items(), key=lambda kv: int(kv[0]))])
        parts.append("<h2>Model comparison</h2>" + html_table(["model", "settings", "OA", "kappa", "mean F1", "network parameters",
                                                               "training s", "mapping px/s"], rows) + per_class
                     + f"<img alt='model comparison' src='{comparison_figure(comparison['models'])}'>"
                     + f"<p class='note'>Every model trained on the same split and scored on all the {html.escape(comparison['part'])} "
                     "pixels (the first row is the model that made the maps); mean ± half-width of the 95 % interval over runs. "
                     "Training seconds: run 0's fit; mapping speed: measured on one window of the first tile, every core of one "
                     "process.</p>")

    calibrated = context.get("calibration")
    if calibrated:
        parts.append(calibration_section(calibrated))
    objects = context.get("objects")
    if objects:
        parts.append(objects_section(final, objects, classes))

    doc = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>chain report</title><style>{CSS}</style>"
           "<script>window.addEventListener('load',function(){var i=Array.prototype.slice.call(document.images);"
           "document.title='chain report: '+i.filter(function(x){return x.complete&&x.naturalWidth>0}).length+'/'+i.length+' images';});</script>"
           f"</head><body>{''.join(parts)}</body></html>")
    out = final / "report.html"
    write_text(out, doc)
    return out
