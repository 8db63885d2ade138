"""What the report says about the run: inputs, grid, reference, split, model, durations, comparison."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chain import __version__, products

if TYPE_CHECKING:
    from chain.runner import Context


def read_comparison(ctx: Context) -> dict[str, Any]:
    path = ctx.paths.comparison
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return result


def report_context(ctx: Context) -> dict[str, Any]:
    from chain.regularize import mmu_pixels
    from chain.runner import read_record, step_class, step_names

    cfg, cat, polys = ctx.cfg, products.catalog(ctx), products.reference(ctx)
    g = cat.grid
    durations: dict[str, str] = {}
    for name in step_names():
        rec = read_record(ctx.workdir, name)
        if name == "validate":
            durations[name] = "this step (writing this report)"
        elif rec and rec.get("status") == "done" and "seconds" in rec:
            s = rec["seconds"]
            step = step_class(name)()
            durations[name] = "off" if not step.enabled(ctx) else f"{s:.1f}" if s >= 0.1 else "< 0.1"
    total = sum(r["seconds"] for n in step_names() if (r := read_record(ctx.workdir, n)) and "seconds" in r)
    model = {k: v for k, v in cfg.section("model").items() if k != "type"}
    inputs = {}
    for s in cat.sources:
        where = getattr(cfg.inputs.get(s.name), "path", None)
        inputs[s.title] = s.summary() + (f" ({where})" if where else "")
    return {
        "title": cfg.source.name if cfg.source else str(ctx.workdir),
        "version": __version__,
        "pixel_area_m2": g.res[0] * g.res[1],
        "summary": {
            "config": str(cfg.source or ""),
            "work folder": str(ctx.workdir),
            **inputs,
            "area of interest": str(cfg.grid.aoi) if cfg.grid.aoi else "grid extent",
            "features": f"{len(products.spec(ctx).names)} in all",
            "grid": f"{g.width} x {g.height} px of {g.res[0]:g} m, {g.crs.to_string()}",
            "reference": f"{len(polys)} polygons, {polys['code'].nunique()} classes ({cfg.inputs.reference.path})",
            "split": f"{cfg.split.scheme}, {cfg.split.runs} run(s), seed {cfg.seed}",
            "model": f"{cfg.model.type} ({', '.join(f'{k}={v}' for k, v in model.items())})",
            "regularization": _regularization(cfg, g.res[0] * g.res[1], mmu_pixels),
        },
        "durations": {**durations, "all steps so far": f"{total:.1f}"},
        "models": [{"name": cfg.model.type, "params": ", ".join(f"{k}={v}" for k, v in model.items())}],
        "comparison": read_comparison(ctx),
        "training_curves": [str(ctx.paths.model(r) / "curves.png") for r in products.runs(ctx)],
    }


def _regularization(cfg: Any, pixel_area: float, mmu_pixels: Any) -> str:
    r = cfg.regularize
    if not r.enabled:
        return "off"
    mmu = mmu_pixels(r.mmu_px, r.mmu_m2, pixel_area)
    majority = f", majority filter radius {r.majority_radius_px} px" if r.majority_radius_px else ""
    return f"minimum mapping unit {mmu} px ({mmu * pixel_area:,.0f} m²){majority}" if mmu > 1 else f"no minimum mapping unit{majority}"
