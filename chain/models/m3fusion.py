"""``model.type: m3fusion``: GRU + attention on the S2 pixel series and a CNN on the SPOT patch around it (Benedetti et al. 2018).

Three heads (fused, series branch, image branch); the loss adds the two auxiliary ones with weight
``aux_weight``. The VHR patch is PAN + the MS bands repeated onto the PAN pixels (``vhr_input:
stack``) or the MS bands pansharpened on the fly (``pansharpened``, as in the paper).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from chain.deep.config import DeepTraining
from chain.deep.inputs import PatchInput
from chain.deep.layers import AdditiveAttention, conv_bn_relu
from chain.deep.torch_model import TorchModel
from chain.errors import ConfigError
from chain.schema import ModelSection


class M3FusionModel(DeepTraining):
    type: Literal["m3fusion"]
    rnn_units: int = Field(1024, ge=4)
    vhr_patch: int = Field(25, ge=9)  # SPOT pixels a side
    # the VHR patch's channels: "stack" = PAN + the MS bands repeated onto the PAN pixels (5 channels);
    # "pansharpened" = the 4 MS bands pansharpened to the PAN pixels on the fly (as in the paper)
    vhr_input: Literal["stack", "pansharpened"] = "stack"
    cnn_channels: tuple[int, int] = (256, 512)  # the 7x7 conv, then the 3x3 convs and the 1x1 fusion
    epochs: int = Field(400, ge=1)  # the reference code's schedule (with early stopping on the fused loss, model.patience)


class M3FusionNet(nn.Module):
    """Benedetti et al. 2018: GRU + attention on the S2 pixel series, CNN on the VHR patch, three heads."""

    def __init__(self, n_classes: int, steps: int, per_step: int, vhr_bands: int, vhr_patch: int, rnn_units: int = 1024,
                 cnn_channels: tuple[int, int] = (256, 512), dropout: float = 0.4):
        super().__init__()
        c1, c2 = cnn_channels
        if (vhr_patch - 6) // 2 - 2 < 1:
            raise ConfigError(f"model.vhr_patch {vhr_patch} is too small for the 7x7 then 3x3 valid convolutions: use at least 13")
        self.steps, self.per_step = steps, per_step
        self.gru = nn.GRU(per_step, rnn_units, batch_first=True)
        self.attention = AdditiveAttention(rnn_units)
        self.block1 = nn.Sequential(conv_bn_relu(vhr_bands, c1, 7), nn.MaxPool2d(2), conv_bn_relu(c1, c2, 3))
        self.block2 = conv_bn_relu(c2, c2, 3, padding=1)
        self.fuse = nn.Sequential(conv_bn_relu(2 * c2, c2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(dropout)
        self.rnn_head, self.cnn_head = nn.Linear(rnn_units, n_classes), nn.Linear(c2, n_classes)
        self.head = nn.Linear(rnn_units + c2, n_classes)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        series = x["s2"].reshape(-1, self.steps, self.per_step)
        h, _ = self.gru(series)
        r = self.drop(self.attention(h))
        f1 = self.block1(x["vhr"])
        c = self.drop(self.fuse(torch.cat([f1, self.block2(f1)], dim=1)))
        return {"fused": self.head(torch.cat([r, c], dim=1)), "aux": [self.rnn_head(r), self.cnn_head(c)]}


class M3Fusion(TorchModel):
    name: ClassVar[str] = "m3fusion"
    config: ClassVar[type[ModelSection]] = M3FusionModel

    def inputs(self, cfg: Any, spec: Any, cat: Any) -> list[PatchInput]:
        from chain.features import series_index

        if cat.source("spot") is None:
            raise ConfigError("model.type 'm3fusion' needs a SPOT PAN + MS pair: add inputs.spot")
        index, T = series_index(cat, spec, "s2", "model.type 'm3fusion'")
        vhr = "pxs" if cfg.vhr_input == "pansharpened" else "vhr"
        return [PatchInput("s2", "grid", 1, index, T), PatchInput("vhr", vhr, cfg.vhr_patch, source="spot")]

    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, int]]) -> nn.Module:
        s2 = shapes["s2"]
        return M3FusionNet(n_classes, s2["steps"], s2["channels"] // s2["steps"], shapes["vhr"]["channels"], shapes["vhr"]["size"],
                           cfg.rnn_units, tuple(cfg.cnn_channels), cfg.dropout)
