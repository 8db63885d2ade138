"""What the pixel time-series networks (TempCNN, L-TAE) share: series inputs with their dates, per-band
normalisation, and maps of another date grid than the training one (annual updates).

A temporal model reads, for each pixel, the gap-filled series of the sources in ``model.series``
(S2, Landsat, S1: each its own date grid) as T dates x D channels (bands + indices). Its network
knows the days of its training series (``shapes[name]["days"]``, counted from 1 January of the
series' first year, so that the same season of another year has the same days) and is told the
days of the series it is given (``set_days``); how it uses them is its own: L-TAE encodes them,
TempCNN resamples onto its training days.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from chain.deep.config import DeepTraining
from chain.deep.inputs import PatchInput
from chain.deep.torch_model import TorchModel
from chain.errors import ConfigError, StepError
from chain.models.base import FitReport, Predictor, TrainingData


class TemporalSection(DeepTraining):
    """The keys every pixel time-series network has besides the trainer's."""

    series: list[str] = Field(default_factory=lambda: ["s2"], min_length=1)  # sources whose series make the input

    @field_validator("series")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from chain.plugins import SOURCES

        unknown = [s for s in value if s not in SOURCES.names()]
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; series come from {', '.join(SOURCES.names())}")
        if len(set(value)) != len(value):
            raise ValueError(f"a source is listed twice: {value}")
        return value


def check_season(name: str, trained: tuple[str, ...], now: tuple[str, ...], where: str, min_share: float = 0.75) -> None:
    """The series given now must cover most of the training season (by day of the year): a model cannot map a
    June-August series with what it learnt from January-December. StepError otherwise."""
    from chain.deep.trainer import days

    a, b = days(trained), days(now)
    if not a or not b:
        return
    span = max(a[-1] - a[0], 1)
    overlap = max(0, min(a[-1], b[-1]) - max(a[0], b[0]))
    if overlap / span < min_share:
        raise StepError(f"the {name} series given now ({now[0]} .. {now[-1]}) covers {100 * overlap / span:.0f} % of the season the "
                        f"model in {where!r} was trained on ({trained[0]} .. {trained[-1]}, days counted from 1 January); "
                        f"at least {100 * min_share:.0f} % is needed: set gapfill.start/end to the same season, or train a new model")


def channels_per_date(inp: PatchInput) -> int:
    return len(inp.index) // max(inp.steps, 1)


class TemporalModel(TorchModel):
    """A torch pixel time-series model: one size-1 patch input per series source, with its dates."""

    def min_dates(self, cfg: Any) -> int:
        """Fewer dates than this in a series is refused before any work."""
        return 2

    @abstractmethod
    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, Any]]) -> Any:
        """The nn.Module; its ``set_days({input: days})`` tells it the days of the series it will be given."""

    def inputs(self, cfg: Any, spec: Any, cat: Any) -> list[PatchInput]:
        from chain.features import series_dates, series_index

        out = []
        for source in cfg.series:
            if cat.source(source) is None:
                raise ConfigError(f"model.series names {source!r}, which is not configured: add inputs.{source}")
            index, steps = series_index(cat, spec, source, f"model.type {cfg.type!r}")
            if steps < self.min_dates(cfg):
                raise ConfigError(f"model.type {cfg.type!r}: the {source} series has {steps} date(s) on its regular grid, fewer "
                                  f"than the {self.min_dates(cfg)} the network needs; lower gapfill.interval_days (or "
                                  f"inputs.{source}.interval_days) or widen gapfill.start/end")
            out.append(PatchInput(source, "grid", 1, index, steps, dates=series_dates(spec, source, steps)))
        return out

    def compatible(self, folder: Path, cfg: Any, spec: Any, cat: Any) -> dict[str, Any]:
        """Another date grid is fine (that is the point); the series sources and their channels must be the same."""
        from chain.models import read_manifest

        manifest = read_manifest(folder)
        trained = {d["name"]: PatchInput.from_dict(d) for d in manifest.get("inputs", [])}
        now = {i.name: i for i in self.inputs(cfg, spec, cat)}
        if set(trained) != set(now):
            raise StepError(f"model in {str(folder)!r} was trained on the series {sorted(trained)}, not {sorted(now)}; "
                            "re-run training (chain run ... --from train)")
        for name, inp in now.items():
            was = manifest["feature_names"]
            before = [was[i].rsplit("_", 1)[0] for i in trained[name].index[:channels_per_date(trained[name])]]
            names = spec.names
            after = [names[i].rsplit("_", 1)[0] for i in inp.index[:channels_per_date(inp)]]
            if before != after:
                raise StepError(f"model in {str(folder)!r} was trained on the {name} channels {before}, the series now has {after}; "
                                "the bands and indices (inputs.*.bands, features.indices) must be the same")
            check_season(name, trained[name].dates, inp.dates, str(folder))
        return manifest

    def fit(self, cfg: Any, data: TrainingData, seed: int, manifest: dict[str, Any]) -> FitReport:
        inputs = [PatchInput.from_dict(d) for d in manifest["inputs"]]
        return self._fit(cfg, data, seed, manifest, period={i.name: channels_per_date(i) for i in inputs})

    def load(self, folder: Path, manifest: dict[str, Any], engine: str = "compiled", threads: int | None = 1,
             spec: Any = None, cat: Any = None) -> Predictor:
        from chain.deep import trainer
        from chain.models import model_type

        predictor = super().load(folder, manifest, engine, threads)
        if spec is not None and cat is not None:  # the series it will be given, perhaps on another date grid
            cfg = model_type(manifest["type"]).config.model_validate(manifest["params"])
            predictor.inputs = self.inputs(cfg, spec, cat)
            predictor.network.set_days({i.name: trainer.days(i.dates) for i in predictor.inputs})  # type: ignore[attr-defined]
        return predictor
