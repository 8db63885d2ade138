"""``model.type: patch_cnn``: the sliding-window baseline of whole-tile segmentation (Postadjian et al. 2017).

A small CNN (~110 k parameters at the default widths) classifies the 65 x 65 px SPOT patch around each
pixel (PAN + MS on the PAN pixels): 5x5 conv, pool, 5x5 conv, pool, 3x3 conv, pool, 3x3 conv, global
average pooling, linear. It runs through the patch-model path like MultiResoLCC: it maps a grid at
any resolution, but every pixel costs a forward pass over its own patch, which is what the fully
convolutional ``fcn`` avoids.
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


class PatchCNNModel(DeepTraining):
    type: Literal["patch_cnn"]
    patch_px: int = Field(65, ge=44)  # SPOT PAN pixels a side (44 at least: three poolings of valid convolutions)
    spot_input: Literal["stack", "pansharpened"] = "stack"
    channels: tuple[int, int, int, int] = (32, 48, 64, 64)
    augment: bool = True
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(100, ge=1)


class PatchCNNNet(nn.Module):
    def __init__(self, n_classes: int, bands: int, patch: int, channels: tuple[int, int, int, int] = (32, 48, 64, 64),
                 dropout: float = 0.4):
        super().__init__()
        c1, c2, c3, c4 = channels
        if ((((patch - 4) // 2 - 4) // 2 - 2) // 2) - 2 < 1:
            raise ConfigError(f"model.patch_px {patch} is too small for the network's valid convolutions and poolings: use at least 44")
        self.features = nn.Sequential(conv_bn_relu(bands, c1, 5), nn.MaxPool2d(2), conv_bn_relu(c1, c2, 5), nn.MaxPool2d(2),
                                      conv_bn_relu(c2, c3, 3), nn.MaxPool2d(2), conv_bn_relu(c3, c4, 3),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(c4, n_classes)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"fused": self.head(self.features(x["vhr"])), "aux": []}


class PatchCNN(TorchModel):
    name: ClassVar[str] = "patch_cnn"
    config: ClassVar[type[ModelSection]] = PatchCNNModel

    def inputs(self, cfg: Any, spec: Any, cat: Any) -> list[PatchInput]:
        if cat.source("spot") is None:
            raise ConfigError("model.type 'patch_cnn' classifies SPOT patches: add inputs.spot")
        return [PatchInput("vhr", "pxs" if cfg.spot_input == "pansharpened" else "vhr", cfg.patch_px, source="spot")]

    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, int]]) -> nn.Module:
        return PatchCNNNet(n_classes, shapes["vhr"]["channels"], shapes["vhr"]["size"], tuple(cfg.channels), cfg.dropout)
