"""Last year's work folder, opened and checked before any heavy step of an update.

An update starts from a *finished* run: its config as it ran (``.chain/config.json``, written by every run),
every step done, its final products present and not marked outdated. Its grid and classes must be this
year's, and when networks are fine-tuned, its model type too. Each difference is one clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chain.errors import ConfigError, StateError

if TYPE_CHECKING:
    from chain.catalog import Catalog
    from chain.config import Config
    from chain.runner import Context


@dataclass
class PreviousRun:
    workdir: Path
    cfg: Config
    ctx: Context

    @property
    def model_type(self) -> str:
        return str(self.cfg.model.type)

    def classes(self) -> list[int]:
        return sorted(int(k) for k in json.loads(self.ctx.paths.classes.read_text()))

    def map(self) -> tuple[Path, Path]:
        """Last year's class map and its confidence (run 0's: the map every run writes)."""
        p = self.ctx.paths
        return p.class_map(0), p.confidence_map(0)

    def model(self, run: int) -> Path:
        """Last year's model of ``run`` (its run 0 when it had fewer runs)."""
        runs = self.cfg.split.runs
        return self.ctx.paths.model(run if run < runs else 0)


def previous_run(ctx: Context) -> PreviousRun:
    """``update.previous`` of the run of ``ctx``, opened and checked once per run (the steps' checks and runs share it)."""
    result: PreviousRun = ctx.memo("previous", lambda: open_previous(ctx.cfg))
    return result


def open_previous(cfg: Config) -> PreviousRun:
    """``update.previous`` as a finished run (StateError / ConfigError naming what is wrong and how to fix it)."""
    from chain.config import parse
    from chain.runner import Context, config_record, read_record, step_class, step_names

    up = cfg.update
    if up is None or up.previous is None:
        raise ConfigError("update.previous is not set: give last year's work folder, e.g. `chain update config.yaml "
                          "--previous ../run_2023`, or set update.previous in the config")
    prev = Path(up.previous)
    if not prev.is_dir():
        raise ConfigError(f"update.previous {str(prev)!r} is not a folder: give last year's work folder (the `workdir` of "
                          "its config)")
    if prev.resolve() == Path(cfg.workdir).resolve():
        raise ConfigError(f"update.previous {str(prev)!r} is this config's own workdir: an update writes a new work folder "
                          "and leaves last year's untouched; set workdir to a new folder (e.g. one per year)")
    record = config_record(prev)
    if not record.exists():
        raise StateError(f"update.previous {str(prev)!r} is not the work folder of a finished chain run (no "
                         f"{record.relative_to(prev)}); if it was made by an older chain, run `chain run` on its config once "
                         "(nothing is recomputed) to record it")
    try:
        prev_cfg = parse(json.loads(record.read_text()))
    except (ConfigError, json.JSONDecodeError) as exc:
        raise StateError(f"update.previous {str(prev)!r}: its recorded config {str(record)!r} cannot be read ({exc}); run "
                         "`chain run` on last year's config once to record it again") from None
    ctx = Context(prev_cfg, prev)
    for name in step_names():
        rec = read_record(prev, name)
        if rec is None or rec.get("status") != "done":
            if rec is None and not step_class(name)().enabled(ctx):
                continue  # an optional step that config never switched on
            state = "never ran" if rec is None else "did not finish"
            raise StateError(f"update.previous {str(prev)!r} is not a finished run: its step {name!r} {state}; finish it "
                             "first (`chain run` on last year's config), then run the update")
    paths = ctx.paths
    if (paths.final / "OUTDATED.txt").exists():
        raise StateError(f"update.previous {str(prev)!r}: its final products are marked outdated (final/OUTDATED.txt: a "
                         "later run did not finish); finish that run first")
    for f in (paths.catalog, paths.classes, paths.class_map(0), paths.confidence_map(0)):
        if not f.exists():
            raise StateError(f"update.previous {str(prev)!r}: {str(f.relative_to(prev))!r} is missing; run `chain run` on "
                             "last year's config to recompute it")
    return PreviousRun(prev, prev_cfg, ctx)


def check_lineage(prev: PreviousRun, cfg: Config, cat: Catalog, codes: list[int]) -> None:
    """This year's grid, classes (``codes``: this year's reference) and model type are last year's."""
    from chain import products

    problems = []
    old = products.catalog(prev.ctx).grid
    new = cat.grid
    if old.crs != new.crs or old.width != new.width or old.height != new.height or \
            any(abs(a - b) > 1e-6 for a, b in zip(old.transform, new.transform, strict=True)):
        def say(g: Any) -> str:
            return f"{g.width} x {g.height} px of {g.res[0]:g} m in {g.crs.to_string()} from ({g.transform[2]:.1f}, {g.transform[5]:.1f})"

        problems.append(f"the grid differs: last year {say(old)}, this year {say(new)}; give this year the same grid "
                        "(grid.bounds, grid.resolution_m, grid.crs as last year's config), so that the maps compare pixel to pixel")
    before, now = set(prev.classes()), set(codes)
    if before != now:
        only_old, only_new = sorted(before - now), sorted(now - before)
        problems.append("the classes differ: " + "; ".join(
            ([f"only last year: {only_old}"] if only_old else []) + ([f"only this year: {only_new}"] if only_new else []))
            + "; an update keeps last year's nomenclature (map new classes onto it in the reference, or run a full `chain run`)")
    up = cfg.update
    assert up is not None
    if up.finetune and cfg.model.type != prev.model_type:
        problems.append(f"model.type is {cfg.model.type!r} but last year's model is {prev.model_type!r}: fine-tuning needs the "
                        f"same type; set model.type: {prev.model_type}, or update.finetune: false to train {cfg.model.type!r} "
                        "from scratch")
    if problems:
        raise ConfigError(f"update.previous {str(prev.workdir)!r} does not fit this year's run:\n  - " + "\n  - ".join(problems))
