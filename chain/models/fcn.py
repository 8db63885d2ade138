"""``model.type: fcn``: fully convolutional segmentation of SPOT-6/7 at the PAN resolution, optionally fused with
the Sentinel-2 series, trained on sparse polygons (after Postadjian et al. and Maggiori et al.).

The network is an encoder-decoder: residual blocks (two 3x3 conv + BN, identity or 1x1 shortcut), 2x2
max pooling whose indices the decoder's unpooling reuses (SegNet), the encoder's features added back
after each unpooling, a 1x1 head. The paper's size is ~1.3 M parameters (``widths`` 32, 64, 128, 192:
1.4 M here). Written here rather than taken from segmentation-models-pytorch: its encoders start at
11 M parameters (ResNet-18) and it has no max-unpooling decoder; this module is the 70 lines of the
architecture the prior work describes.

- ``fusion``: ``early`` stacks the S2 features (resampled onto the grid) with the SPOT channels at the
  input; ``late`` gives them an encoder of their own, run at the bottleneck's cell (``2^depth`` PAN px:
  12 m for 3 poolings, the 10 m S2 lattice is not aligned with the 1.5 m PAN one) and merged at the top
  of the decoder.
- ``upsample``: ``early`` doubles the input (bilinear) and runs the whole network at 0.75 m (the
  teacher: small objects survive its poolings); ``late`` runs at 1.5 m and doubles the decoder's last
  features before a residual block and the head (the student). Both predict at x2 and average the logits
  back to the grid (``fused``); ``fine`` keeps the x2 logits for distillation.
- ``small_objects: distill`` trains the early-upsampling teacher, then the late-upsampling student with
  the sparse cross-entropy plus the distillation loss on every pixel (``chain.deep.segment_train``);
  only the student is kept for inference.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field, model_validator
from torch import nn

from chain.deep.config import DeepTraining
from chain.deep.inputs import PatchInput
from chain.errors import ConfigError, StepError
from chain.models.base import FitReport, ModelType, Predictor, TrainingData
from chain.schema import ModelSection

log = logging.getLogger(__name__)
# max-unpooling scatters to distinct indices: deterministic on CPU, whatever torch's generic warning says when a training in
# this process switched deterministic algorithms on
warnings.filterwarnings("ignore", message="max_unpooling2d_forward_out does not have a deterministic")


class FCNModel(DeepTraining):
    type: Literal["fcn"]
    spot_input: Literal["stack", "pansharpened"] = "stack"  # PAN + MS repeated onto the PAN pixels, or MS pansharpened
    widths: tuple[int, ...] = (32, 64, 128, 192)  # channels per level; len - 1 poolings (stride 2^(len - 1))
    fusion: Literal["none", "early", "late"] = "none"  # with the Sentinel-2 series (inputs.s2)
    s2_width: int = Field(64, ge=4)  # channels of the late-fusion S2 encoder
    s2_features: list[str] | None = None  # the S2 bands / indices fused, per date (e.g. [B4, B8, NDVI]); default all
    upsample: Literal["none", "early", "late"] = "none"
    small_objects: Literal["none", "distill"] = "none"
    distill_weight: float = Field(0.5, ge=0, le=1)  # share of the distillation loss (the rest: sparse cross-entropy)
    distill_temperature: float = Field(2.0, gt=0)
    teacher_epochs: int | None = Field(None, ge=1)  # default: epochs
    tile_px: int = Field(256, ge=16)  # training crops; tiles are read with tile_margin_px more on each side
    tile_margin_px: int = Field(32, ge=0)
    window_px: int = Field(256, ge=16)  # inference windows
    overlap_px: int = Field(64, ge=0)  # blended overlap of neighbouring windows
    augment: bool = True  # rotations / flips of the crops
    # the prior work's schedule: Adam (default settings), lr x 0.7 every 50 epochs, class-weighted cross-entropy
    lr: float = Field(1e-3, gt=0)
    lr_step_epochs: int | None = Field(50, ge=1)
    lr_gamma: float = Field(0.7, gt=0, le=1)
    class_weights: bool = True
    batch_size: int = Field(8, ge=1)
    epochs: int = Field(150, ge=1)

    @model_validator(mode="after")
    def _sizes(self) -> FCNModel:
        stride = 2 ** (len(self.widths) - 1)
        if len(self.widths) < 2:
            raise ValueError("widths needs at least two levels (one pooling)")
        for key in ("tile_px", "window_px"):
            if getattr(self, key) % stride:
                raise ValueError(f"{key} ({getattr(self, key)}) must be a multiple of the network's stride {stride} "
                                 f"(2^{len(self.widths) - 1} for {len(self.widths)} widths): e.g. {getattr(self, key) // stride * stride or stride}")
        if self.overlap_px % 2 or 2 * self.overlap_px > self.window_px:
            raise ValueError(f"overlap_px ({self.overlap_px}) must be even and at most half of window_px ({self.window_px})")
        if self.small_objects == "distill" and self.upsample != "none":
            raise ValueError("small_objects: distill trains an early-upsampling teacher and a late-upsampling student: "
                             "leave upsample unset")
        return self


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                  nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class FCNNet(nn.Module):
    """Encoder-decoder with residual blocks and max-unpooling; optional S2 fusion and x2 upsampling (see the module)."""

    def __init__(self, n_classes: int, spot_channels: int, widths: tuple[int, ...] = (32, 64, 128, 192), s2_channels: int = 0,
                 fusion: str = "none", s2_width: int = 64, upsample: str = "none"):
        super().__init__()
        self.fusion, self.upsample, self.depth = fusion, upsample, len(widths) - 1
        cin = spot_channels + (s2_channels if fusion == "early" else 0)
        self.enc = nn.ModuleList()
        for w in widths[:-1]:
            self.enc.append(ResBlock(cin, w))
            cin = w
        self.bottom = nn.Sequential(ResBlock(cin, widths[-1]), ResBlock(widths[-1], cin))
        if fusion == "late":
            self.s2 = nn.Sequential(ResBlock(s2_channels, s2_width), ResBlock(s2_width, s2_width))
            self.merge = nn.Sequential(nn.Conv2d(cin + s2_width, cin, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.dec = nn.ModuleList(ResBlock(widths[i], widths[max(i - 1, 0)]) for i in reversed(range(self.depth)))
        if upsample == "late":
            # (a half-width x2 stage, tried to save time, left the student at a validation loss of ~1.0 on the demo)
            self.fine = ResBlock(widths[0], widths[0])
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        h = x["spot"]
        if self.fusion == "early":
            h = torch.cat([h, x["s2"]], dim=1)
        if self.upsample == "early":
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        skips, indices = [], []
        for block in self.enc:
            h = block(h)
            skips.append(h)
            h, idx = F.max_pool2d(h, 2, return_indices=True)
            indices.append(idx)
        h = self.bottom(h)
        if self.fusion == "late":
            # the bottleneck's cell on the grid: 2^depth px, half that when the input was doubled
            cell = 2**self.depth // (2 if self.upsample == "early" else 1)
            s2 = self.s2(F.avg_pool2d(x["s2"], cell) if cell > 1 else x["s2"])
            h = self.merge(torch.cat([h, s2], dim=1))
        for block, skip, idx in zip(self.dec, reversed(skips), reversed(indices), strict=True):
            h = block(F.max_unpool2d(h, idx, (2, 2), output_size=skip.shape[-2:]) + skip)
        if self.upsample == "late":
            h = self.fine(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))
        logits = self.head(h)
        if self.upsample == "none":
            return {"fused": logits, "fine": logits, "aux": []}
        return {"fused": F.avg_pool2d(logits, 2), "fine": logits, "aux": []}


def parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


class FCNPredictor(Predictor):
    """Whole windows through the network, blended on the lattice (``chain.deep.segment.predict_blended``)."""

    whole_tile = True

    def __init__(self, inputs: list[PatchInput], classes: list[int], model: nn.Module, device: torch.device, lattice: Any):
        self.inputs, self.classes_ = inputs, np.asarray(classes)
        self.model, self.device, self.lattice = model, device, lattice
        self.seconds: dict[str, float] = {}

    def predict_proba(self, x: Any) -> np.ndarray:
        raise StepError("a segmentation model maps windows (predict_window), not single pixels or patches")

    def predict_window(self, cat: Any, spec: Any, window: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from chain.deep.segment import predict_blended

        return predict_blended(self.model, cat, spec, self.inputs, window, self.lattice, len(self.classes_), self.device, self.seconds)


class FCN(ModelType):
    name: ClassVar[str] = "fcn"
    kind: ClassVar[str] = "segmentation"
    config: ClassVar[type[ModelSection]] = FCNModel
    files: ClassVar[tuple[str, ...]] = ("model.pt", "history.json", "curves.png")
    transferable: ClassVar[bool] = True

    def inputs(self, cfg: Any, spec: Any, cat: Any) -> list[PatchInput]:
        from chain.features import series_dates, series_index

        if cat.source("spot") is None:
            raise ConfigError("model.type 'fcn' segments SPOT-6/7 images: add inputs.spot")
        out = [PatchInput("spot", "pxs" if cfg.spot_input == "pansharpened" else "vhr", 1, source="spot")]
        if cfg.fusion != "none":
            if cat.source("s2") is None:
                raise ConfigError(f"model.fusion {cfg.fusion!r} fuses the Sentinel-2 series: add inputs.s2, or set model.fusion: none")
            index, steps = series_index(cat, spec, "s2", f"model.fusion {cfg.fusion!r}")
            if cfg.s2_features:
                channels = [c for _, g in spec.of_source("s2") if g.is_series for c in g.channels][:len(index) // steps]
                unknown = [f for f in cfg.s2_features if f not in channels]
                if unknown:
                    raise ConfigError(f"model.s2_features: {unknown} are not S2 features of this run (per date: {', '.join(channels)})")
                keep = [d for d, c in enumerate(channels) if c in cfg.s2_features]
                index = tuple(index[t * len(channels) + d] for t in range(steps) for d in keep)
            out.append(PatchInput("s2", "grid", 1, index, steps, dates=series_dates(spec, "s2", steps)))
        return out

    def check(self, cfg: Any, spec: Any, cat: Any) -> None:
        import rasterio

        from chain.deep.segment import lattice_offset
        from chain.deep.trainer import resolve_device

        inputs = self.inputs(cfg, spec, cat)
        row, col = lattice_offset(cat, inputs[0], "model.type 'fcn'")
        src = cat.source("spot")
        with rasterio.open(src.pan) as pan:
            h, w = pan.height, pan.width
        g = cat.grid
        if row < 0 or col < 0 or row + g.height > h or col + g.width > w:
            raise ConfigError(f"model.type 'fcn': the SPOT image ({w} x {h} PAN px) does not cover the grid ({g.width} x {g.height} px "
                              f"from PAN pixel {col}, {row}); set grid.bounds inside the SPOT footprint")
        resolve_device(cfg.device)

    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, Any]], upsample: str | None = None) -> nn.Module:
        return FCNNet(n_classes, int(shapes["spot"]["channels"]), tuple(cfg.widths), int(shapes.get("s2", {}).get("channels", 0)),
                      cfg.fusion, cfg.s2_width, upsample if upsample is not None else cfg.upsample)

    def fit(self, cfg: Any, data: TrainingData, seed: int, manifest: dict[str, Any]) -> FitReport:
        from chain.deep import segment_train, trainer
        from chain.deep.segment import labelled_tiles

        inputs = [PatchInput.from_dict(d) for d in manifest["inputs"]]
        classes = manifest["classes"]
        t0 = time.time()
        tr = labelled_tiles(data.cat, data.spec, inputs, data.polygons("train"), classes, cfg.tile_px, cfg.tile_margin_px,
                            "train: training tiles")
        val = labelled_tiles(data.cat, data.spec, inputs, data.polygons("validation"), classes, cfg.tile_px, cfg.tile_margin_px,
                             "train: validation tiles") if data.validation is not None else None
        present = set(np.unique(tr.labels[tr.labels >= 0]).tolist())
        missing = [c for i, c in enumerate(classes) if i not in present]
        if missing:
            raise StepError(f"train: class(es) {missing} have no labelled pixel in any training tile (their polygons are smaller "
                            "than a pixel, or off the SPOT image); drop them from the reference or set split.small_class: drop")
        log.info("train: %d training tiles (%d labelled px), %d validation tiles, read in %.1f s", len(tr.labels),
                 int((tr.labels >= 0).sum()), 0 if val is None else len(val.labels), time.time() - t0)
        shapes = {i.name: {"channels": int(tr.arrays[i.name].shape[1]), "size": cfg.window_px, "steps": i.steps} for i in inputs}
        n = len(classes)
        extra: dict[str, Any] = {}
        t_fit = time.time()
        start = data.start_from
        if start is not None:  # an update: last year's network fine-tuned (the distillation teacher is not trained again)
            net, norm, history = segment_train.train(cfg, lambda: self.network(cfg, n, shapes, start.manifest.get("upsample")),
                                                     tr, val, n, cfg.tile_px, seed, checkpoint=data.folder / "checkpoint.pt",
                                                     start=start)
            extra["lineage"] = start.lineage()
        elif cfg.small_objects == "distill":
            teacher_cfg = cfg.model_copy(update={"epochs": cfg.teacher_epochs or cfg.epochs})
            teacher, norm, teacher_history = segment_train.train(
                teacher_cfg, lambda: self.network(cfg, n, shapes, "early"), tr, val, n, cfg.tile_px, seed,
                checkpoint=data.folder / "teacher_checkpoint.pt")
            teacher_seconds = time.time() - t_fit
            trainer.plot_curves(teacher_history, data.folder / "teacher_curves.png")
            extra["teacher"] = {"parameters": parameters(teacher), "epochs": len(teacher_history), "seconds": teacher_seconds,
                                "best_val_loss": min((h.get("val_loss", np.inf) for h in teacher_history), default=None)}
            net, norm, history = segment_train.train(cfg, lambda: self.network(cfg, n, shapes, "late"), tr, val, n, cfg.tile_px, seed,
                                                     checkpoint=data.folder / "checkpoint.pt", teacher=teacher, norm=norm)
            (data.folder / "teacher_checkpoint.pt").unlink(missing_ok=True)
        else:
            net, norm, history = segment_train.train(cfg, lambda: self.network(cfg, n, shapes), tr, val, n, cfg.tile_px, seed,
                                                     checkpoint=data.folder / "checkpoint.pt")
        seconds = time.time() - t_fit
        upsample = start.manifest.get("upsample") if start is not None else "late" if cfg.small_objects == "distill" else cfg.upsample
        trainer.save(data.folder, net, norm, history, {**manifest, "shapes": shapes, "upsample": upsample, "parameters": parameters(net),
                                                       "train_seconds": seconds, "train_tiles": len(tr.labels),
                                                       "labelled_pixels": int((tr.labels >= 0).sum()), **extra,
                                                       "device": str(trainer.resolve_device(cfg.device))})
        (data.folder / "checkpoint.pt").unlink(missing_ok=True)
        return FitReport(seconds, f"{len(tr.labels)} tiles, {len(history)} epochs ({parameters(net):,} parameters)")

    def load(self, folder: Path, manifest: dict[str, Any], engine: str = "compiled", threads: int | None = 1,
             spec: Any = None, cat: Any = None) -> Predictor:
        from chain.deep import trainer
        from chain.deep.export import served
        from chain.deep.segment import Lattice

        if threads and multiprocessing.parent_process() is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)  # a worker process: its share of the cores (see TorchModel.load)
        cfg = FCNModel.model_validate(manifest["params"])
        net, norm = trainer.load(folder, manifest, lambda n, shapes: self.network(cfg, n, shapes, manifest.get("upsample")))
        device = trainer.resolve_device(cfg.device)
        inputs = [PatchInput.from_dict(d) for d in manifest["inputs"]]
        model = served(net, norm, manifest["shapes"], [i.name for i in inputs]).to(device)
        predictor = FCNPredictor(inputs, manifest["classes"], model, device, Lattice(cfg.window_px, cfg.overlap_px))
        predictor.network = net  # type: ignore[attr-defined]
        return predictor
