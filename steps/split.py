"""split: reference polygons into train/validation(/test) per class, for every run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from chain import products
from chain.atomic import atomic_path
from chain.errors import ConfigError
from chain.params import From, StepParams
from chain.runner import Context, Step


class SplitParams(StepParams):
    split: Annotated[dict[str, Any], From("split")]
    seed: Annotated[int, From("seed")]


class Split(Step):
    name = "split"
    requires = ("ingest",)
    after = ("carryover",)
    Params = SplitParams

    def upstream(self, ctx: Context) -> tuple[str, ...]:
        return self.requires + (("carryover",) if ctx.cfg.update is not None else ())  # an update: the carried reference

    def check(self, ctx: Context) -> None:
        from chain.split import check_parts, make_splits, small_classes

        # fail before any heavy work when a class cannot be split
        s = ctx.cfg.split
        ref = ctx.cfg.inputs.reference
        if (ref.split_field or ref.validation_path) and s.runs != 1:
            raise ConfigError(f"split.runs is {s.runs} but the reference gives its own split "
                              f"(inputs.reference.{'split_field' if ref.split_field else 'validation_path'}): that is one run; "
                              "set split.runs: 1")
        if ref.validation_path and s.scheme != "30/70":
            raise ConfigError("inputs.reference.validation_path makes the split train (the reference) + validation (that file), "
                              "scheme 30/70; for train/validation/test give inputs.reference.split_field instead")
        _, polys = products.preflight(ctx)
        if "part" in polys.columns:
            check_parts(polys, s.scheme)
        if s.small_class == "error" and ("part" in polys.columns or small_classes(polys["code"], s.scheme, s.min_polygons_per_class)):
            make_splits(polys, s.scheme, 1, ctx.cfg.seed, s.min_polygons_per_class, s.small_class)

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.paths.split]

    def run(self, ctx: Context) -> None:
        from chain.split import make_splits

        s = ctx.cfg.split
        table = make_splits(products.reference(ctx), s.scheme, s.runs, ctx.cfg.seed, s.min_polygons_per_class, s.small_class)
        with atomic_path(ctx.paths.split) as tmp:
            table.to_csv(tmp, index=False)
