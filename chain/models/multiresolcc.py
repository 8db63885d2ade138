"""``model.type: multiresolcc``: two-branch CNN on a SPOT PAN patch and the co-centred MS patch (Gaetano et al. 2018).

The PAN branch pools twice, the MS branch keeps its resolution; both end in global max pooling,
concatenated into one linear classifier. Inputs: a ``pan_patch`` x ``pan_patch`` PAN patch and the
MS patch over the same ground (``pan_patch / ratio`` MS pixels a side), on the images' own pixels.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from chain.deep.config import DeepTraining
from chain.deep.inputs import PatchInput
from chain.deep.layers import conv_bn_relu
from chain.deep.torch_model import TorchModel
from chain.errors import ConfigError
from chain.schema import ModelSection


class MultiResoLCCModel(DeepTraining):
    type: Literal["multiresolcc"]
    pan_patch: int = Field(32, ge=8)  # PAN pixels a side; the MS patch is pan_patch / ratio
    pan_channels: tuple[int, int, int] = (128, 256, 512)
    ms_channels: tuple[int, int, int] = (256, 512, 1024)
    augment: bool = True  # random rotations / flips / transposition of both patches
    epochs: int = Field(250, ge=1)  # the reference schedule (with early stopping on the fused loss, model.patience)


class MultiResoLCCNet(nn.Module):
    """Gaetano et al. 2018: a PAN branch and an MS branch, global max pooling, concatenation, linear."""

    def __init__(self, n_classes: int, pan_bands: int, ms_bands: int, pan_patch: int, ms_patch: int,
                 pan_channels: tuple[int, int, int] = (128, 256, 512), ms_channels: tuple[int, int, int] = (256, 512, 1024),
                 dropout: float = 0.4):
        super().__init__()
        p1, p2, p3 = pan_channels
        m1, m2, m3 = ms_channels
        if ((pan_patch - 2) // 2 - 2) // 2 - 2 < 1 or ms_patch - 6 < 1:
            raise ConfigError(f"model.pan_patch {pan_patch} (MS patch {ms_patch}) is too small for the network's valid "
                              "convolutions: the PAN patch needs at least 20 pixels and the MS patch 7 (pan_patch 28 for "
                              "SPOT's ratio of 4; the paper uses 32)")
        self.pan = nn.Sequential(conv_bn_relu(pan_bands, p1, 3), nn.MaxPool2d(2), conv_bn_relu(p1, p2, 3), nn.MaxPool2d(2), conv_bn_relu(p2, p3, 3),
                                 nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.ms = nn.Sequential(conv_bn_relu(ms_bands, m1, 3), conv_bn_relu(m1, m2, 3), conv_bn_relu(m2, m3, 3),
                                nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(p3 + m3, n_classes)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"fused": self.head(torch.cat([self.pan(x["pan"]), self.ms(x["ms"])], dim=1)), "aux": []}


class MultiResoLCC(TorchModel):
    name: ClassVar[str] = "multiresolcc"
    config: ClassVar[type[ModelSection]] = MultiResoLCCModel

    def inputs(self, cfg: Any, spec: Any, cat: Any) -> list[PatchInput]:
        spot = cat.source("spot")
        if spot is None:
            raise ConfigError("model.type 'multiresolcc' needs a SPOT PAN + MS pair: add inputs.spot")
        if cfg.pan_patch % spot.ratio:
            raise ConfigError(f"model.pan_patch ({cfg.pan_patch}) must be a multiple of the MS/PAN ratio ({spot.ratio})")
        return [PatchInput("pan", "pan", cfg.pan_patch, source="spot"), PatchInput("ms", "ms", cfg.pan_patch // spot.ratio, source="spot")]

    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, int]]) -> nn.Module:
        return MultiResoLCCNet(n_classes, shapes["pan"]["channels"], shapes["ms"]["channels"], shapes["pan"]["size"],
                               shapes["ms"]["size"], tuple(cfg.pan_channels), tuple(cfg.ms_channels), cfg.dropout)
