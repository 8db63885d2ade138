"""``model.type: twinns``: twin (ConvGRU, CNN) branches on S1 and S2 patch time series (Ienco et al. 2019).

Per sensor, a ConvGRU runs over the patch sequence (attention over its states) and a CNN over the
dates stacked as channels; four auxiliary heads and one fused head. Choices the paper leaves open
are in docs/deep.md.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from chain.deep.config import DeepTraining
from chain.deep.inputs import PatchInput
from chain.deep.layers import AdditiveAttention, ConvGRUCell, conv_bn_relu
from chain.deep.torch_model import TorchModel
from chain.schema import ModelSection


class TwinnsModel(DeepTraining):
    type: Literal["twinns"]
    patch: int = Field(5, ge=1)  # grid pixels a side (odd)
    rnn_units: int = Field(64, ge=4)  # ConvGRU hidden channels
    cnn_channels: tuple[int, int] = (128, 256)

    @model_validator(mode="after")
    def _odd(self) -> TwinnsModel:
        if self.patch % 2 == 0:
            raise ValueError(f"patch must be odd (centred on the pixel), got {self.patch}")
        return self


class SensorTwin(nn.Module):
    """One sensor's pair of branches: ConvGRU over the patch sequence (+ attention), CNN on the dates stacked."""

    def __init__(self, steps: int, per_step: int, rnn_units: int, cnn_channels: tuple[int, int], dropout: float):
        super().__init__()
        self.steps, self.per_step = steps, per_step
        self.cell = ConvGRUCell(per_step, rnn_units)
        self.attention = AdditiveAttention(rnn_units)
        c1, c2 = cnn_channels
        self.cnn = nn.Sequential(conv_bn_relu(steps * per_step, c1, 3, padding=1), conv_bn_relu(c1, c2, 3, padding=1),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, s, _ = x.shape
        seq = x.reshape(n, self.steps, self.per_step, s, s)
        h = x.new_zeros(n, self.cell.hidden, s, s)
        states = []
        for t in range(self.steps):
            h = self.cell(seq[:, t], h)
            states.append(h.mean(dim=(2, 3)))
        rnn = self.drop(self.attention(torch.stack(states, dim=1)))
        return rnn, self.drop(self.cnn(x))


class TWINNSNet(nn.Module):
    """Ienco et al. 2019: twin (ConvGRU, CNN) branches for S1 and S2, four auxiliary heads, one fused head."""

    def __init__(self, n_classes: int, s2_steps: int, s2_per_step: int, s1_steps: int, s1_per_step: int,
                 rnn_units: int = 64, cnn_channels: tuple[int, int] = (128, 256), dropout: float = 0.4):
        super().__init__()
        self.s2 = SensorTwin(s2_steps, s2_per_step, rnn_units, cnn_channels, dropout)
        self.s1 = SensorTwin(s1_steps, s1_per_step, rnn_units, cnn_channels, dropout)
        dims = [rnn_units, cnn_channels[1]] * 2
        self.aux = nn.ModuleList(nn.Linear(d, n_classes) for d in dims)
        self.head = nn.Linear(sum(dims), n_classes)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        parts = [*self.s2(x["s2"]), *self.s1(x["s1"])]
        return {"fused": self.head(torch.cat(parts, dim=1)), "aux": [h(p) for h, p in zip(self.aux, parts, strict=False)]}


class Twinns(TorchModel):
    name: ClassVar[str] = "twinns"
    config: ClassVar[type[ModelSection]] = TwinnsModel

    def inputs(self, cfg: Any, spec: Any, cat: Any) -> list[PatchInput]:
        from chain.features import series_index

        i2, t2 = series_index(cat, spec, "s2", "model.type 'twinns'")
        i1, t1 = series_index(cat, spec, "s1", "model.type 'twinns'")
        return [PatchInput("s2", "grid", cfg.patch, i2, t2), PatchInput("s1", "grid", cfg.patch, i1, t1)]

    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, int]]) -> nn.Module:
        s2, s1 = shapes["s2"], shapes["s1"]
        return TWINNSNet(n_classes, s2["steps"], s2["channels"] // s2["steps"], s1["steps"], s1["channels"] // s1["steps"],
                         cfg.rnn_units, tuple(cfg.cnn_channels), cfg.dropout)
