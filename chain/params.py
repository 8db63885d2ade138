"""Typed step parameters, derived from the config: what a step's outputs depend on.

Each step declares a ``StepParams`` subclass whose fields say where they come from in the config
(``From("split.scheme")``, a whole section ``From("gapfill")``, or a section minus keys that do not
change results ``From("model", exclude=("n_jobs",))``). Its values go into the step's signature, so
changing any of them re-runs the step and what depends on it. ``NO_EFFECT`` lists, with the reason,
every config key no step reads; a test checks that every key of the schema (every source's and every
model type's included) is read by some step or listed there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from chain.config import Config


@dataclass(frozen=True)
class From:
    """A parameter's place in the config: a dotted key (with everything below it), minus ``exclude``
    (keys relative to it); ``when``: read only when it returns True for the config (else None)."""

    path: str
    exclude: tuple[str, ...] = ()
    when: Callable[[Any], bool] | None = None


def config_value(cfg: Config, path: str) -> Any:
    """The JSON value at dotted ``path`` of the config (None when a key on the way is absent)."""
    head, *rest = path.split(".")
    value = cfg.section(head)
    for key in rest:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _without(value: Any, exclude: tuple[str, ...]) -> Any:
    if not exclude:
        return value
    if isinstance(value, list):
        return [_without(v, exclude) for v in value]
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key in exclude:
        head, _, rest = key.partition(".")
        if rest and head in out:
            out[head] = _without(out[head], (rest,))
        else:
            out.pop(head, None)
    return out


class StepParams(BaseModel):
    """A step's parameters: each field annotated ``Annotated[type, From("config.key")]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def sources(cls) -> dict[str, From]:
        out = {}
        for name, field in cls.model_fields.items():
            found = [m for m in field.metadata if isinstance(m, From)]
            if len(found) != 1:
                raise TypeError(f"{cls.__name__}.{name} needs one From(...) saying where it comes from in the config")
            out[name] = found[0]
        return out

    @classmethod
    def of(cls, cfg: Config) -> StepParams:
        values = {}
        for name, src in cls.sources().items():
            values[name] = None if src.when is not None and not src.when(cfg) else _without(config_value(cfg, src.path), src.exclude)
        return cls.model_validate(values)


class NoParams(StepParams):
    """A step that depends on no config value (only on its upstream steps)."""


# Config keys no step's outputs depend on, and why. Everything else must be read by a step (tested).
NO_EFFECT: dict[str, str] = {
    "workdir": "where the outputs go, not what they are",
    "cluster": "where and how fast the work runs, never what it computes",
    "demo": "generates the inputs, which are fingerprinted as they are read",
    "vars": "already substituted into the other keys",
    "update.previous_config": "brings last year's run up to date first; what it computes is read through update.previous",
    "classify.engine": "the compiled forest and scikit-learn give the same classes",
    "model.n_jobs": "parallelism of the Random Forest's fit",
    "model.num_workers": "DataLoader processes: the batches are the same",
    "model.inference_batch": "pixels per forward pass: the same probabilities",
    "model.torch_threads": "CPU threads of a torch training: the same schedule and data (float sums may differ in the last bits)",
    "classify.inference_batch": "pixels per forward pass: the same probabilities",
    "compare_models.n_jobs": "as model.n_jobs",
    "compare_models.num_workers": "as model.num_workers",
    "compare_models.inference_batch": "as model.inference_batch",
    "compare_models.torch_threads": "as model.torch_threads",
}
RESOURCE_KEYS = ("n_jobs", "num_workers", "inference_batch", "torch_threads")  # model keys in NO_EFFECT
