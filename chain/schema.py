"""The building blocks of the configuration schema, shared by the config and by every plug-in's section.

Plug-ins (sources, model types) declare their config section as a ``Section`` subclass in their own
module; ``chain.config`` assembles the whole schema from the registries. Keep this module light: it
is imported by every plug-in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value.resolve() if value.is_absolute() else value


# a path in the config: relative to the config file's folder
PathFromConfig = Annotated[Path, AfterValidator(_resolve)]

ResamplingName = Literal["nearest", "bilinear", "cubic", "average"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    """What every ``model`` section has: its type (the model registry's name)."""

    type: str
