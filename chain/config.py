"""The configuration: YAML -> typed, validated, frozen models.

Defaults live here and only here. Every section is validated before any work starts; unknown keys
are errors with a closest-name hint; messages name the file and the key path. Relative paths are
relative to the config file.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from chain.errors import ConfigError

S2_BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value.resolve() if value.is_absolute() else value


PathFromConfig = Annotated[Path, AfterValidator(_resolve)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S2Input(Section):
    """Sentinel-2 series: one folder per date (single-band GeoTIFFs + a mask), or THEIA L2A products."""

    path: PathFromConfig
    format: Literal["folders", "theia", "sen2cor"] = "folders"
    theia_reflectance: Literal["FRE", "SRE"] = "FRE"  # THEIA: flat (slope-corrected) or surface reflectance
    sen2cor_snow_invalid: bool = False  # Sen2Cor: treat SCL class 11 (snow) as invalid
    bands: list[str] = Field(default_factory=lambda: list(S2_BANDS), min_length=1)
    date_regex: str = r"(?P<date>\d{8})"
    mask_name: str = "MASK"
    mask_valid_values: list[int] = Field(default_factory=lambda: [0])
    nodata: float | None = None
    saturation: float | None = None
    scale: float = Field(1e-4, gt=0)
    offset: float = 0.0
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "bilinear"


class ReferenceInput(Section):
    path: PathFromConfig
    class_field: str = "code"
    name_field: str | None = None
    layer: str | None = None


class StackInput(Section):
    """Features users already have: one multi-band raster, or several (e.g. one per date)."""

    path: PathFromConfig | list[PathFromConfig]  # a file, a folder of .tif/.vrt, or a list of files
    bands: list[str] | None = None  # band names of each file; default: the band descriptions, else b1..bn
    nodata: float | None = None  # default: the files' own nodata
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "nearest"


class S1Input(Section):
    """Calibrated, orthorectified Sentinel-1 backscatter: one GeoTIFF per date and polarisation (linear sigma0).

    File names need the date (YYYYMMDD) and the polarisation (vv/vh) between separators, and may give
    the orbit direction (ASC/DES), as S1Tiling's ``s1a_33NWB_vv_DES_007_20200108t054435.tif`` do.
    """

    path: PathFromConfig
    polarisations: list[Literal["vv", "vh"]] = Field(default_factory=lambda: ["vv", "vh"], min_length=1)
    orbits: Literal["separate", "merged"] = "separate"  # ascending and descending as separate series, or one
    db: bool = True  # convert linear sigma0 to decibels
    nodata: float | None = None  # default: the files' nodata; values <= 0 are invalid anyway
    interval_days: int = Field(12, ge=1, le=366)  # S1's own regular date grid (linear interpolation)
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "bilinear"


class SpotInput(Section):
    """A SPOT-6/7 (or Pleiades-like) PAN + MS pair, each at its native resolution.

    Either ``path``, a delivery folder holding the PAN and MS DIMAP products (``DIM_*_P_*.XML`` and
    ``DIM_*_MS_*.XML``), or ``pan`` and ``ms``, each a GeoTIFF, a ``DIM_*.XML`` or a DIMAP folder.
    """

    path: PathFromConfig | None = None
    pan: PathFromConfig | None = None
    ms: PathFromConfig | None = None
    ms_bands: list[str] | None = None  # names of the MS bands in file order; default blue, green, red, nir
    nodata: float | None = None  # default: the files' nodata
    max_shift_px: float = Field(0.5, gt=0)  # warn when PAN and MS are shifted by more (MS pixels)

    @model_validator(mode="after")
    def _one_way(self) -> "SpotInput":
        if (self.path is None) == (self.pan is None and self.ms is None) or (self.path is None and (self.pan is None or self.ms is None)):
            raise ValueError("give either 'path' (a folder with the PAN and MS products) or both 'pan' and 'ms'")
        return self


class Inputs(Section):
    s2: S2Input | None = None
    s1: S1Input | None = None
    spot: SpotInput | None = None
    stack: StackInput | None = None
    reference: ReferenceInput

    @model_validator(mode="after")
    def _some_imagery(self) -> "Inputs":
        if self.s2 is None and self.stack is None and self.s1 is None and self.spot is None:
            raise ValueError("give at least one image input: 's2' (a time series), 's1', 'spot' (PAN + MS) or 'stack' (a feature stack)")
        return self


class GridConfig(Section):
    crs: str | None = None
    resolution_m: float | None = Field(None, gt=0)
    bounds: tuple[float, float, float, float] | None = None
    # area of interest: a polygon file; the grid covers its extent and pixels outside it stay empty
    aoi: PathFromConfig | None = None
    tile_size_px: int = Field(512, ge=16, le=16384)

    @model_validator(mode="after")
    def _bounds_order(self) -> "GridConfig":
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
    def _order(self) -> "GapfillConfig":
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        return self


class FeaturesConfig(Section):
    indices: list[Literal["ndvi", "ndwi", "brightness"]] = Field(default_factory=lambda: ["ndvi", "ndwi", "brightness"])
    write_cube: bool = False


class SplitConfig(Section):
    scheme: Literal["30/70", "64/16/20"] = "30/70"
    runs: int = Field(1, ge=1, le=100)
    min_polygons_per_class: int = Field(2, ge=1)
    small_class: Literal["error", "drop"] = "error"


class SampleConfig(Section):
    max_pixels_per_class: int | None = Field(None, ge=1)
    max_pixels_per_polygon: int | None = Field(None, ge=1)
    min_clear_dates: int = Field(1, ge=1)  # pixels observed clear on fewer dates are not used for training


class RFModel(Section):
    type: Literal["rf"] = "rf"
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = Field(25, ge=1)
    min_samples_split: int = Field(2, ge=2)
    min_samples_leaf: int = Field(1, ge=1)
    max_features: Literal["sqrt", "log2"] | float = "sqrt"
    class_weight: Literal["balanced", "balanced_subsample"] | None = None
    n_jobs: int = -1


class DeepTraining(Section):
    """What every torch model shares: the trainer's settings (one trainer for all)."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-4, gt=0)  # Adam
    lr_step_epochs: int | None = Field(None, ge=1)  # step decay: lr x lr_gamma every this many epochs
    lr_gamma: float = Field(0.5, gt=0, le=1)
    class_weights: bool = False  # cross-entropy weighted by inverse class frequency
    patience: int | None = Field(None, ge=1)  # early stopping: epochs without improvement (None: run all epochs)
    aux_weight: float = Field(0.3, ge=0)  # weight of each auxiliary (per-branch) classifier's loss
    dropout: float = Field(0.4, ge=0, lt=1)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    num_workers: int = Field(0, ge=0)  # DataLoader workers (CUDA); 0 = in the training process
    max_samples_per_class: int | None = Field(None, ge=1)  # cap on training patches per class (after sample's caps)
    inference_batch: int = Field(2048, ge=1)  # pixels per forward pass when classifying

    @model_validator(mode="after")
    def _device(self) -> "DeepTraining":
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self


class MultiResoLCCModel(DeepTraining):
    """Two-branch CNN on a PAN patch and the co-centred MS patch (Gaetano et al. 2018)."""

    type: Literal["multiresolcc"]
    pan_patch: int = Field(32, ge=8)  # PAN pixels a side; the MS patch is pan_patch / ratio
    pan_channels: tuple[int, int, int] = (128, 256, 512)
    ms_channels: tuple[int, int, int] = (256, 512, 1024)
    augment: bool = True  # random rotations / flips / transposition of both patches


class M3FusionModel(DeepTraining):
    """GRU + attention on the S2 pixel series and a CNN on the VHR patch around it (Benedetti et al. 2018)."""

    type: Literal["m3fusion"]
    rnn_units: int = Field(1024, ge=4)
    vhr_patch: int = Field(25, ge=9)  # SPOT pixels a side
    # the VHR patch's channels: "stack" = PAN + the MS bands repeated onto the PAN pixels (5 channels);
    # "pansharpened" = the 4 MS bands pansharpened to the PAN pixels on the fly (as in the paper)
    vhr_input: Literal["stack", "pansharpened"] = "stack"
    cnn_channels: tuple[int, int] = (256, 512)  # the 7x7 conv, then the 3x3 convs and the 1x1 fusion


class TwinnsModel(DeepTraining):
    """Twin networks on S1 and S2 patch time series: ConvGRU + CNN per sensor (Ienco et al. 2019)."""

    type: Literal["twinns"]
    patch: int = Field(5, ge=1)  # grid pixels a side (odd)
    rnn_units: int = Field(64, ge=4)  # ConvGRU hidden channels
    cnn_channels: tuple[int, int] = (128, 256)

    @model_validator(mode="after")
    def _odd(self) -> "TwinnsModel":
        if self.patch % 2 == 0:
            raise ValueError(f"patch must be odd (centred on the pixel), got {self.patch}")
        return self


class RFPatchModel(RFModel):
    """Random Forest on flattened patches: the pixel features of a patch_px x patch_px window (+ a PAN patch)."""

    type: Literal["rf_patch"]  # type: ignore[assignment]
    patch_px: int = Field(3, ge=1)  # grid pixels a side (odd)
    pan_patch: int = Field(0, ge=0)  # SPOT PAN pixels a side, flattened too (0: none)
    pxs_patch: int = Field(0, ge=0)  # pansharpened SPOT (4 bands at PAN pixels) a side, flattened too (0: none)

    @model_validator(mode="after")
    def _odd(self) -> "RFPatchModel":
        if self.patch_px % 2 == 0:
            raise ValueError(f"patch_px must be odd (centred on the pixel), got {self.patch_px}")
        return self


ModelConfig = Annotated[RFModel | RFPatchModel | MultiResoLCCModel | M3FusionModel | TwinnsModel, Field(discriminator="type")]
DEEP_TYPES = ("multiresolcc", "m3fusion", "twinns")
MODEL_TYPES = {"rf": RFModel, "rf_patch": RFPatchModel, "multiresolcc": MultiResoLCCModel, "m3fusion": M3FusionModel,
               "twinns": TwinnsModel}


class ClassifyConfig(Section):
    probabilities: bool = False  # also write one probability band per class (uint8, 0-100)
    # compiled: Random Forests evaluated by chain.forest (same predictions, faster); sklearn: model.predict_proba
    engine: Literal["compiled", "sklearn"] = "compiled"


class FusionConfig(Section):
    enabled: bool = False  # majority vote of the runs' maps (needs split.runs >= 2)


class VectorizeConfig(Section):
    enabled: bool = False  # polygons of the regularized map (raw map when regularization is off) to GPKG


class ClusterConfig(Section):
    """local: a dask LocalCluster; slurm/pbs: dask-jobqueue, one dask worker per batch job."""

    type: Literal["local", "slurm", "pbs"] = "local"
    n_workers: int = Field(2, ge=1)  # local: worker processes; slurm/pbs: jobs submitted
    threads_per_worker: int = Field(1, ge=1)  # slurm/pbs: cores per job
    memory_limit: str = "4GiB"  # per worker (per job on slurm/pbs)
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
    color: tuple[int, int, int] | str | None = None


class DemoConfig(Section):
    """When present, ``chain run`` generates the synthetic demo scene at the input paths if missing."""

    size_px: int = Field(500, ge=32, le=20000)
    n_dates: int = Field(24, ge=3, le=150)
    n_fields: int = Field(250, ge=8)
    seed: int = 0
    year: int = 2021
    layout: Literal["folders", "theia", "theia_zip", "sen2cor", "sen2cor_zip"] = "folders"  # how the S2 series is written
    s1: bool = False  # also write a Sentinel-1-like VV/VH series in <folder>/s1
    spot: Literal["none", "dimap", "dimap_jp2", "geotiff"] = "none"  # also write a SPOT-6/7-like PAN + MS pair in <folder>/spot
    s2_tiles: Literal[1, 2] = 1  # 2: each date as two overlapping products (tiles T40KCB and T40KDB)


class Config(Section):
    workdir: PathFromConfig
    seed: int = 0
    inputs: Inputs
    grid: GridConfig = GridConfig()
    gapfill: GapfillConfig = GapfillConfig()
    features: FeaturesConfig = FeaturesConfig()
    split: SplitConfig = SplitConfig()
    sample: SampleConfig = SampleConfig()
    model: ModelConfig = RFModel()
    # more models trained on the same split and scored on the same evaluation pixels (no maps): the
    # report's model comparison table, e.g. a deep model beside its RF counterparts
    compare_models: list[ModelConfig] = Field(default_factory=list)
    classify: ClassifyConfig = ClassifyConfig()
    cluster: ClusterConfig = ClusterConfig()
    mosaic: MosaicConfig = MosaicConfig()
    regularize: RegularizeConfig = RegularizeConfig()
    fusion: FusionConfig = FusionConfig()
    vectorize: VectorizeConfig = VectorizeConfig()
    classes: dict[int, ClassInfo] = Field(default_factory=dict)
    demo: DemoConfig | None = None
    vars: dict[str, Any] = Field(default_factory=dict)  # values for ${name} placeholders (already substituted)

    @field_validator("model", mode="before")
    @classmethod
    def _rf_by_default(cls, value: Any) -> Any:
        return {"type": "rf", **value} if isinstance(value, dict) and "type" not in value else value

    @field_validator("compare_models", mode="before")
    @classmethod
    def _rf_by_default_each(cls, value: Any) -> Any:
        return [cls._rf_by_default(v) for v in value] if isinstance(value, list) else value

    # where the config came from, for messages; not part of the config itself
    source: Path | None = Field(None, exclude=True)

    def section_hash(self, *names: str) -> str:
        return stable_hash({n: self.section(n) for n in names})

    def section(self, name: str) -> Any:
        return json.loads(self.model_dump_json(include={name}))[name] if name in type(self).model_fields else None


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (to suggest names for an unknown key)."""
    model: Any = Config
    if len(loc) >= 4 and loc[0] == "compare_models" and isinstance(loc[1], int):
        return MODEL_TYPES.get(loc[2])
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = [c for c in [ann, *getattr(ann, "__args__", ())] if isinstance(c, type) and issubclass(c, BaseModel)]
        model = candidates[0] if candidates else None
        tagged = {c.model_fields["type"].annotation.__args__[0]: c for c in candidates if "type" in c.model_fields}
        if len(tagged) > 1:  # a discriminated union (model): pydantic puts the tag in the location
            return tagged.get(loc[-2]) if len(loc) >= 2 and loc[-2] in tagged else None
    return model


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
    # pydantic puts the model type (the union's tag) in the location: users wrote model.epochs, not model.twinns.epochs
    tags = {"rf", "rf_patch", *DEEP_TYPES}
    shown = tuple(p for i, p in enumerate(loc) if not (p in tags and i > 0 and (loc[i - 1] == "model" or isinstance(loc[i - 1], int))))
    key = ".".join(str(p) for p in shown) or "(top level)"
    if err["type"] == "extra_forbidden":
        model = _model_at(loc)
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys here: {', '.join(k for k in model.model_fields if k != 'source')}"
        return f"unknown key '{key}'{hint}"
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) and len(str(value)) > 60 else f" (got {value!r})"
    return f"key '{key}': {err['msg']}{shown}"


def parse(data: Any, source: Path | None = None, base_dir: Path | None = None) -> Config:
    where = str(source) if source else "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a YAML mapping of sections (workdir, inputs, ...), got {type(data).__name__}")
    try:
        cfg = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = sorted({_describe(e) for e in exc.errors()})
        raise ConfigError(f"{where}: {len(lines)} problem(s) in the configuration:\n  - " + "\n  - ".join(lines)) from None
    return cfg.model_copy(update={"source": source})


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{p}' is not a section")
    node[parts[-1]] = value


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(node: Any, values: dict[str, Any], where: str = "") -> Any:
    """Fill ``${name}`` placeholders from ``values``; a whole-string placeholder keeps the value's type."""
    if isinstance(node, dict):
        return {k: substitute(v, values, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        names = _PLACEHOLDER.findall(node)
        missing = [n for n in names if n not in values]
        if missing:
            raise ConfigError(
                f"key '{where}': placeholder ${{{missing[0]}}} has no value; define it under 'vars:' "
                f"or pass --set vars.{missing[0]}=VALUE (known: {sorted(values) or 'none'})"
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
        set_key(data if isinstance(data, dict) else {}, key, yaml.safe_load(raw))
    if isinstance(data, dict):
        values = data.get("vars") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: 'vars' must be a mapping of names to values")
        data = {**substitute({k: v for k, v in data.items() if k != "vars"}, values), "vars": values}
    return parse(data, source=path.resolve(), base_dir=path.resolve().parent)


def pydantic_adapter_for_model() -> Any:
    """Validates a ``model`` section alone (e.g. one stored in a model's manifest)."""
    from pydantic import TypeAdapter

    return TypeAdapter(ModelConfig)
