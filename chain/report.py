"""Validation outputs: RESULTS.txt (the iota2-style text users know), metrics.json, confusion PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from chain.atomic import atomic_path, write_json, write_text
from chain.metrics import mean_ci, scores
from chain.paths import confusion_png_name


def run_metrics(cm: np.ndarray, labels: list[int]) -> dict[str, Any]:
    s = scores(cm)
    return {
        "oa": s["oa"], "kappa": s["kappa"], "macro_f1": s["macro_f1"], "n_pixels": s["n"],
        "per_class": {str(c): {"precision": p, "recall": r, "f1": f, "n_reference": int(cm[i].sum())}
                      for i, (c, p, r, f) in enumerate(zip(labels, s["precision"], s["recall"], s["f1"], strict=False))},
        "confusion": cm.tolist(),
    }


def summarize(runs: list[dict[str, Any]], labels: list[int]) -> dict[str, Any]:
    def agg(values: list[float]) -> dict[str, float]:
        m, h = mean_ci(values)
        return {"mean": m, "ci95": h}

    out: dict[str, Any] = {"oa": agg([r["oa"] for r in runs]), "kappa": agg([r["kappa"] for r in runs]),
                           "macro_f1": agg([r["macro_f1"] for r in runs]), "per_class": {}}
    for c in labels:
        out["per_class"][str(c)] = {k: agg([r["per_class"][str(c)][k] for r in runs]) for k in ("precision", "recall", "f1")}
    return out


def _undefined(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def mean_ci_text(a: dict[str, Any], digits: int = 3) -> str:
    """``mean +- ci95``; ``n/a`` when undefined (e.g. a class without validation pixels), no +- with one run."""
    if _undefined(a.get("mean")):
        return "n/a"
    return f"{a['mean']:.{digits}f}" + ("" if _undefined(a.get("ci95")) else f" +- {a['ci95']:.{digits}f}")


def results_text(runs: list[dict[str, Any]], summary: dict[str, Any], labels: list[int], names: dict[int, str], part: str,
                 map_name: str = "Classif_Seed_{r}.tif") -> str:
    lines = [f"Validation of {map_name.format(r='<n>')} on the '{part}' polygons of each run (pixels inside polygons).",
             "#row = reference", "#col = production", ""]
    width = max(7, *(len(str(c)) for c in labels))
    for r, m in enumerate(runs):
        lines += [f"*********** Run {r} ***********", f"Confusion matrix ({map_name.format(r=r)}):", ""]
        lines.append(" " * (width + 2) + "".join(f"{c:>{width}}" for c in labels))
        for c, row in zip(labels, m["confusion"], strict=False):
            lines.append(f"{c:>{width}}  " + "".join(f"{v:>{width}}" for v in row))
        lines += ["", f"KAPPA : {m['kappa']:.3f}", f"OA : {m['oa']:.3f}", ""]
    lines += [f"#################### Summary over {len(runs)} run(s): mean +- 95% CI ####################", "",
              f"OA = {mean_ci_text(summary['oa'])}", f"Kappa = {mean_ci_text(summary['kappa'])}",
              f"Mean F1 (classes with validation pixels) = {mean_ci_text(summary['macro_f1'])}", "",
              f"{'class':<28}{'Precision':>18}{'Recall':>18}{'F1':>18}"]
    for c in labels:
        pc = summary["per_class"][str(c)]
        label = f"{c} {names.get(c, '')}".strip()
        lines.append(f"{label:<28}{mean_ci_text(pc['precision']):>18}{mean_ci_text(pc['recall']):>18}{mean_ci_text(pc['f1']):>18}")
    return "\n".join(lines) + "\n"


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the file-only Agg backend (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_fig(cm: np.ndarray, ticks: list[str], title: str):  # type: ignore[no-untyped-def]
    """Two heat maps of a confusion matrix: pixel counts, and shares of each reference row."""
    plt = pyplot()
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.8 * len(ticks) + 2.5), 0.7 * len(ticks) + 2.5))
    size = 9 if len(ticks) <= 8 else 8 if len(ticks) <= 14 else 7
    for ax, data, fmt, label in ((axes[0], cm, "d", "pixels"), (axes[1], norm, ".2f", "share of the reference row")):
        image = ax.imshow(data, cmap="Blues")
        for i in range(len(ticks)):
            for j in range(len(ticks)):
                # dark text on light cells, white on dark ones (by the cell's own colour, whatever the panel)
                r, g, b, _ = image.cmap(image.norm(data[i, j]))
                ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=size,
                        color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
        ax.set_xticks(range(len(ticks)), ticks, rotation=45, ha="right")
        ax.set_yticks(range(len(ticks)), ticks)
        ax.set_xlabel("map")
        ax.set_ylabel("reference")
        ax.set_title(f"{title}: {label}")
    fig.tight_layout()
    return fig


def confusion_png(path: Path, cm: np.ndarray, labels: list[int], names: dict[int, str], title: str) -> None:
    fig = confusion_fig(cm, [f"{c} {names.get(c, '')}".strip() for c in labels], title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    pyplot().close(fig)


def write_reports(final: Path, runs: list[dict[str, Any]], labels: list[int], names: dict[int, str], part: str,
                  regularized: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    summary = summarize(runs, labels)
    for r, m in enumerate(runs):
        confusion_png(final / confusion_png_name(r), np.array(m["confusion"]), labels, names,
                      f"Run {r}: OA {m['oa']:.3f}, kappa {m['kappa']:.3f}")
    doc: dict[str, Any] = {"evaluated_on": part, "labels": labels, "names": {str(k): v for k, v in names.items()},
                           "runs": runs, "summary": summary}
    text = results_text(runs, summary, labels, names, part)
    if regularized:
        reg_summary = summarize(regularized, labels)
        doc["regularized"] = {"runs": regularized, "summary": reg_summary}
        text += "\n\n" + results_text(regularized, reg_summary, labels, names, part, "Classif_Seed_{r}_regularized.tif")
    write_json(final / "metrics.json", doc)
    write_text(final / "RESULTS.txt", text)
    return summary


def comparison_text(comparison: dict[str, Any]) -> str:
    """The model comparison table of RESULTS.txt."""
    lines = [f"Model comparison (same split, all {comparison['part']} pixels; mean +- 95 % CI over runs)", "",
             f"{'model':<22}{'OA':>18}{'kappa':>18}{'mean F1':>18}{'parameters':>12}{'train s':>9}{'map px/s':>10}"]
    for m in comparison["models"]:
        s, cost = m["summary"], m.get("cost") or {}
        lines.append(f"{m['name']:<22}{mean_ci_text(s['oa']):>18}{mean_ci_text(s['kappa']):>18}{mean_ci_text(s['f1_mean']):>18}"
                     f"{_num(cost.get('parameters')):>12}{_num(cost.get('train_seconds')):>9}{_num(cost.get('inference_px_s')):>10}")
    names = comparison.get("class_names") or {}
    if names and all("f1_per_class" in m["summary"] for m in comparison["models"]):
        lines += ["", "F1 per class (mean over runs)", "", f"{'class':<24}" + "".join(f"{m['name'][:13]:>14}" for m in comparison["models"])]
        for code, name in sorted(names.items(), key=lambda kv: int(kv[0])):
            lines.append(f"{(code + ' ' + name)[:23]:<24}" + "".join(f"{m['summary']['f1_per_class'].get(code, float('nan')):>14.3f}"
                                                              for m in comparison["models"]))
    return "\n".join(lines) + "\n"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"
