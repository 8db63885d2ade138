"""The configuration: YAML -> typed, validated, frozen models.

Defaults live in the schema and only there. The core sections are declared here; the sections of
plug-ins (``inputs.<source>``, ``model`` and each ``compare_models`` entry) are declared by their
modules and validated through the registries, loading only the plug-ins a config names. Every
problem of a config is reported at once; unknown keys get a closest-name hint; messages name the
file and the key path. Relative paths are relative to the config file.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from chain.demo.options import DemoConfig
from chain.errors import ConfigError
from chain.schema import ModelSection, PathFromConfig, Section
from chain.update.options import UpdateConfig


class ReferenceInput(Section):
    path: PathFromConfig
    class_field: str = "code"
    name_field: str | None = None
    layer: str | None = None
    # your own split instead of the seeded one: a field saying each polygon's part (train / validation /
    # test), or a second polygon file that is the validation set (the polygons of `path` then all train)
    split_field: str | None = None
    validation_path: PathFromConfig | None = None

    @model_validator(mode="after")
    def _one_split(self) -> ReferenceInput:
        if self.split_field and self.validation_path:
            raise ValueError("give split_field or validation_path, not both")
        return self


class Inputs(Section):
    """``reference`` plus one section per input source, named as registered (s2, s1, spot, stack, landsat, ...)."""

    model_config = ConfigDict(extra="allow", frozen=True)  # the source sections, validated by parse()
    reference: ReferenceInput
    # files slow to read tile by tile (strips as wide as the image, large JPEG 2000 tiles) copied once as tiled
    # GeoTIFFs by ingest (auto), every file (always) or none (never): chain.tiled_copies
    tiled_copies: Literal["auto", "always", "never"] = "auto"

    def sources(self) -> dict[str, Section]:
        """The configured source sections, by source name."""
        return {k: v for k, v in (self.__pydantic_extra__ or {}).items() if v is not None}

    def get(self, name: str) -> Any:
        return self.sources().get(name)

    @model_validator(mode="after")
    def _some_imagery(self) -> Inputs:
        if not self.sources():
            from chain.plugins import SOURCES

            raise ValueError(f"give at least one image input beside 'reference': one of {', '.join(SOURCES.names())}")
        return self


class GridConfig(Section):
    crs: str | None = None
    resolution_m: float | None = Field(None, gt=0)
    bounds: tuple[float, float, float, float] | None = None
    # area of interest: a polygon file; the grid covers its extent and pixels outside it stay empty
    aoi: PathFromConfig | None = None
    tile_size_px: int = Field(512, ge=16, le=16384)

    @model_validator(mode="after")
    def _bounds_order(self) -> GridConfig:
        if self.bounds is not None:
            left, bottom, right, top = self.bounds
            if not (left < right and bottom < top):
                raise ValueError(f"bounds must be [left, bottom, right, top] with left < right and bottom < top, got {list(self.bounds)}")
        if self.bounds is not None and self.aoi is not None:
            raise ValueError("give 'bounds' or 'aoi', not both (the AOI's extent is the grid's bounds)")
        return self


class GapfillConfig(Section):
    start: dt.date | None = None
    end: dt.date | None = None
    interval_days: int = Field(10, ge=1, le=366)
    method: Literal["linear", "spline"] = "linear"  # spline: OTB's rule (linear < 3 dates, natural cubic 3-4, Akima > 4)

    @model_validator(mode="after")
    def _order(self) -> GapfillConfig:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        return self


class FeaturesConfig(Section):
    indices: list[Literal["ndvi", "ndwi", "brightness"]] = Field(default_factory=lambda: ["ndvi", "ndwi", "brightness"])  # type: ignore[arg-type]
    write_cube: bool = False
    # zarr: every tile's features computed once into features/cube.zarr and read back by the steps after it
    # (sample, compare_models, classify) instead of reading and gap-filling the series again; the values are the same
    cache: Literal["none", "zarr"] = "none"


class SegmentationConfig(Section):
    """Object-based mapping (off unless ``method`` is set): segment the scene, describe each object by statistics of
    every feature, and train, map and validate objects (docs/objects.md)."""

    method: Literal["none", "felzenszwalb", "slic"] = "none"
    # what to segment: spot = the SPOT cell features (MS bands, NDVI, PAN texture on the grid); features = the
    # features named in ``bands`` (fnmatch patterns; default every NDVI of the series, as sits does); auto = spot when
    # SPOT is an input, else features
    source: Literal["auto", "spot", "features"] = "auto"
    bands: list[str] = Field(default_factory=list)
    scale: float = Field(100.0, gt=0, le=100000)  # felzenszwalb: larger -> larger objects (on bands scaled to 2-98 %)
    sigma: float = Field(0.5, ge=0, le=10)  # Gaussian smoothing (pixels) before segmenting
    min_size_m2: float = Field(500.0, gt=0)  # smaller objects are merged into a neighbour
    segment_size_m2: float = Field(5000.0, gt=0)  # slic: the target object area
    compactness: float = Field(0.1, gt=0, le=1000)  # slic: larger -> squarer objects, smaller -> follow the image
    halo_px: int = Field(64, ge=8, le=1024)  # context read around each tile so that the tiling does not show
    stats: list[str] = Field(default_factory=lambda: ["mean", "std", "p10", "p50", "p90"])
    min_cover: float = Field(0.5, gt=0, le=1)  # share of an object a reference polygon must cover to label it
    compare_pixels: bool = True  # also train and map pixels with the same model, to compare in the report

    @field_validator("stats")
    @classmethod
    def _stats(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not (s in ("mean", "std") or re.fullmatch(r"p(100|[1-9]?[0-9])", s))]
        if bad or not v:
            raise ValueError(f"statistics must be mean, std or a percentile p0..p100 (e.g. p10, p50, p90), got {bad or v}")
        if len(set(v)) != len(v):
            raise ValueError(f"a statistic is listed twice: {v}")
        return v

    @property
    def enabled(self) -> bool:
        return self.method != "none"


class SplitConfig(Section):
    scheme: Literal["30/70", "64/16/20"] = "30/70"
    runs: int = Field(1, ge=1, le=100)
    min_polygons_per_class: int = Field(2, ge=1)
    small_class: Literal["error", "drop"] = "error"


class SampleConfig(Section):
    max_pixels_per_class: int | None = Field(None, ge=1)
    max_pixels_per_polygon: int | None = Field(None, ge=1)
    min_clear_dates: int = Field(1, ge=1)  # pixels observed clear on fewer dates are not used for training


class ClassifyConfig(Section):
    probabilities: bool = False  # also write one probability band per class (uint8, 0-100)
    # compiled: Random Forests evaluated by chain.forest (same predictions, faster); sklearn: model.predict_proba
    engine: Literal["compiled", "sklearn"] = "compiled"
    # patch and temporal networks: pixels per forward pass (null: the model's own inference_batch); more uses more
    # memory per worker, the probabilities are the same
    inference_batch: int | None = Field(None, ge=1)


class CalibrationConfig(Section):
    """Temperature scaling of the models' probabilities (chain.calibration): calibrated confidence maps."""

    # null (auto): on with the 64/16/20 split (fitted on the validation polygons), off with 30/70; true with 30/70
    # holds out ``holdout`` of each run's training polygons (per class) to fit it, which changes what the model learns from
    enabled: bool | None = None
    holdout: float = Field(0.2, gt=0, lt=0.9)
    bins: int = Field(10, ge=2, le=50)  # of the reliability diagram and the ECE in the report


class FusionConfig(Section):
    enabled: bool = False  # majority vote of the runs' maps (needs split.runs >= 2)


class VectorizeConfig(Section):
    enabled: bool = False  # polygons of the regularized map (raw map when regularization is off) to GPKG


class ClusterConfig(Section):
    """local: a dask LocalCluster; slurm/pbs: dask-jobqueue, one dask worker per batch job."""

    type: Literal["local", "slurm", "pbs"] = "local"
    n_workers: int = Field(2, ge=1)  # local: worker processes; slurm/pbs: jobs submitted
    threads_per_worker: int = Field(1, ge=1)  # slurm/pbs: cores per job
    memory_limit: str = "4GiB"  # per worker (per job on slurm/pbs); "auto": the machine's memory / n_workers
    processes: bool = True  # local only: false = threads in this process
    retries: int = Field(1, ge=0)
    gdal_cache_mb: int = Field(256, ge=16)
    # slurm / pbs only
    queue: str | None = None  # partition (SLURM) or queue (PBS)
    account: str | None = None
    walltime: str = "01:00:00"
    job_extra_directives: list[str] = Field(default_factory=list)  # e.g. ["--qos=normal"] or ["-l select=1"]
    job_script_prologue: list[str] = Field(default_factory=list)  # shell lines run before the worker starts
    interface: str | None = None  # network interface of the workers and scheduler, e.g. ib0
    host: str | None = None  # address the scheduler and workers bind to, e.g. 127.0.0.1 on a single node
    log_directory: str | None = None  # batch job logs; default <workdir>/logs/jobs
    startup_timeout_s: int = Field(300, ge=5)  # how long to wait for the first worker

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        from chain.resources import WORKER_BASE_BYTES, human, parse_bytes

        if value == "auto":
            return value
        n = parse_bytes(value)
        if n < WORKER_BASE_BYTES:
            raise ValueError(f"{value} is less than a worker needs before its first tile (about {human(WORKER_BASE_BYTES)}); give 1GiB or more")
        return value


class MosaicConfig(Section):
    cog: bool = True
    compress: Literal["deflate", "zstd", "lzw"] = "deflate"


class RegularizeConfig(Section):
    enabled: bool = True
    mmu_px: int | None = Field(5, ge=1)
    mmu_m2: float | None = Field(None, gt=0)
    majority_radius_px: int = Field(0, ge=0, le=50)


class ClassInfo(Section):
    name: str | None = None
    color: tuple[int, int, int] | None = None  # "#RRGGBB", a colour name ("red", "darkgreen") or [r, g, b]

    @field_validator("color", mode="before")
    @classmethod
    def _rgb(cls, value: Any) -> Any:
        if isinstance(value, str):
            from chain.raster import parse_color

            return parse_color(value)
        if isinstance(value, (list, tuple)) and not (len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value)):
            raise ValueError(f"a colour as [r, g, b] needs three integers 0..255, got {list(value)}")
        return value


class Config(Section):
    workdir: PathFromConfig
    seed: int = 0
    inputs: Inputs
    grid: GridConfig = GridConfig()
    gapfill: GapfillConfig = GapfillConfig()
    features: FeaturesConfig = FeaturesConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    split: SplitConfig = SplitConfig()
    sample: SampleConfig = SampleConfig()
    # the model section of the registered type (model.type, default rf), validated by parse()
    model: SerializeAsAny[ModelSection]
    # more models trained on the same split and scored on the same evaluation pixels (no maps): the
    # report's model comparison table, e.g. a deep model beside its RF counterparts
    compare_models: list[SerializeAsAny[ModelSection]] = Field(default_factory=list)
    classify: ClassifyConfig = ClassifyConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    cluster: ClusterConfig = ClusterConfig()
    mosaic: MosaicConfig = MosaicConfig()
    regularize: RegularizeConfig = RegularizeConfig()
    fusion: FusionConfig = FusionConfig()
    vectorize: VectorizeConfig = VectorizeConfig()
    classes: dict[int, ClassInfo] = Field(default_factory=dict)
    demo: DemoConfig | None = None
    update: UpdateConfig | None = None  # this run updates last year's (chain update --previous)
    vars: dict[str, Any] = Field(default_factory=dict)  # values for ${name} placeholders (already substituted)

    # where the config came from, for messages; not part of the config itself
    source: Path | None = Field(None, exclude=True)

    def section(self, name: str) -> Any:
        """A section as plain JSON values (what signatures hash)."""
        return json.loads(self.model_dump_json(include={name}))[name] if name in type(self).model_fields else None


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---- errors -------------------------------------------------------------------------------------

def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model under ``root`` that holds the key at ``loc`` (to suggest names for an unknown key)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = [c for c in [ann, *getattr(ann, "__args__", ())] if isinstance(c, type) and issubclass(c, BaseModel)]
        model = candidates[0] if candidates else None
    return model


def _describe(err: Any, root: type[BaseModel], prefix: tuple[Any, ...] = ()) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
    key = ".".join(str(p) for p in (*prefix, *loc)) or "(top level)"
    if err["type"] == "extra_forbidden":
        model = _model_at(root, loc)
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys here: {', '.join(k for k in model.model_fields if k != 'source')}"
        return f"unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) and len(str(value)) > 60 else f" (got {value!r})"
    return f"key '{key}': {err['msg'].removeprefix('Value error, ')}{shown}"


def _section(cls: type[Section], value: Any, prefix: tuple[Any, ...], context: dict[str, Any], problems: list[str]) -> Any:
    """``value`` validated as ``cls``; on failure the problems are collected and a placeholder returned."""
    try:
        return cls.model_validate(value, context=context)
    except ValidationError as exc:
        problems += [_describe(e, cls, prefix) for e in exc.errors()]
        return None


DEFAULT_MODEL = "rf"  # model.type when a model section gives none


def parse_model(value: Any, where: str = "model", context: dict[str, Any] | None = None,
                problems: list[str] | None = None) -> ModelSection | None:
    """A ``model`` section validated by its registered type's schema (``type`` defaults to rf)."""
    from chain.plugins import MODELS

    collect = problems is not None
    problems = [] if problems is None else problems
    if not isinstance(value, dict):
        problems.append(f"key '{where}': expected a mapping with a 'type' (one of {', '.join(MODELS.names())}), got {value!r}")
    else:
        value = {"type": DEFAULT_MODEL, **value}
        try:
            cls = MODELS.get(str(value["type"]), f"{where}.type").config
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            out: ModelSection | None = _section(cls, value, tuple(where.split(".")), context or {}, problems)
            if not problems or collect:
                return out
    if not collect:
        raise ConfigError("; ".join(problems))
    return None


def parse(data: Any, source: Path | None = None, base_dir: Path | None = None) -> Config:
    where = str(source) if source else "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a YAML mapping of sections (workdir, inputs, ...), got {type(data).__name__}")
    from chain.plugins import SOURCES

    context = {"base_dir": base_dir}
    problems: list[str] = []
    data = dict(data)
    inputs = data.get("inputs")
    named_a_source = False  # when every source section is wrong, "give at least one image input" would only confuse
    if isinstance(inputs, dict):
        inputs = dict(inputs)
        for name in [k for k in inputs if k not in Inputs.model_fields]:  # reference, tiled_copies
            value = inputs.pop(name)
            if value is None:  # an emptied optional block
                continue
            named_a_source = True
            try:
                cls = SOURCES.get(str(name), f"inputs.{name}").config
            except ConfigError as exc:
                problems.append(f"unknown key 'inputs.{name}': {str(exc).split(': ', 1)[1]}")
                continue
            section = _section(cls, value, ("inputs", name), context, problems)
            if section is not None:
                inputs[name] = section
        data["inputs"] = inputs
    model = parse_model(data.get("model") or {}, "model", context, problems)
    data["model"] = model or ModelSection.model_construct(type="?")
    compare = data.get("compare_models") or []
    if not isinstance(compare, list):
        problems.append(f"key 'compare_models': expected a list of model sections, got {compare!r}")
        compare = []
    data["compare_models"] = [parse_model(m, f"compare_models.{i}", context, problems) or ModelSection.model_construct(type="?")
                              for i, m in enumerate(compare)]
    cfg = None
    try:
        cfg = Config.model_validate(data, context=context)
    except ValidationError as exc:
        problems += [_describe(e, Config) for e in exc.errors()
                     if not (named_a_source and e["loc"] == ("inputs",) and "at least one image input" in e["msg"])]
    if problems:
        lines = sorted(set(problems))
        raise ConfigError(f"{where}: {len(lines)} problem(s) in the configuration:\n  - " + "\n  - ".join(lines))
    assert cfg is not None
    return cfg.model_copy(update={"source": source})


# ---- --set and ${var} ---------------------------------------------------------------------------

def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts: list[Any] = dotted.split(".")
    for i, p in enumerate(parts):
        if p not in node and p.lstrip("-").isdigit() and int(p) in node:
            parts[i] = int(p)  # --set classes.1.name=... addresses the file's class 1 (an integer key in YAML)
        if i < len(parts) - 1:
            node = node.setdefault(parts[i], {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {dotted}: '{p}' is not a section")
    node[parts[-1]] = value


_PLACEHOLDER = re.compile(r"\$\{((?:env:)?[A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(node: Any, values: dict[str, Any], where: str = "") -> Any:
    """Fill ``${name}`` placeholders from ``values`` and ``${env:NAME}`` from the environment (e.g. a data
    folder that differs between a laptop and a cluster); a whole-string placeholder keeps the value's type."""
    import os

    env = {f"env:{k}": v for k, v in os.environ.items()}
    values = {**values, **env}
    if isinstance(node, dict):
        return {k: substitute(v, values, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        names = _PLACEHOLDER.findall(node)
        missing = [n for n in names if n not in values]
        if missing and missing[0].startswith("env:"):
            raise ConfigError(f"key '{where}': environment variable {missing[0][4:]} is not set (used as ${{{missing[0]}}}); "
                              f"export it before running, e.g. export {missing[0][4:]}=/path/to/data")
        if missing:
            raise ConfigError(
                f"key '{where}': placeholder ${{{missing[0]}}} has no value; define it under 'vars:' "
                f"or pass --set vars.{missing[0]}=VALUE (known: {sorted(k for k in values if k not in env) or 'none'})"
            )
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    return node


def load(path: Path | str, overrides: list[str] | None = None) -> Config:
    """Read, override (``key.path=value``, value parsed as YAML), fill ``${var}``s, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (expected a YAML file such as configs/example.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if isinstance(data, dict) and "." not in key and key in (data.get("vars") or {}):
            key = f"vars.{key}"  # --set year=2022 sets the variable 'year'
        try:
            # "#ff0000" would be a YAML comment (None): a value starting with # is the string itself
            value = raw.strip() if raw.strip().startswith("#") else yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]}); "
                              "quote it, e.g. --set 'key=\"text\"'") from None
        set_key(data if isinstance(data, dict) else {}, key, value)
    if isinstance(data, dict):
        values = data.get("vars") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: 'vars' must be a mapping of names to values")
        data = {**substitute({k: v for k, v in data.items() if k != "vars"}, values), "vars": values}
    return parse(data, source=path.resolve(), base_dir=path.resolve().parent)
