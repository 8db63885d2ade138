"""``model.type: tempcnn``: 1-D convolutions over the pixel's time series (Pelletier et al. 2019).

Three convolution layers over time (64 filters of width 5, batch norm, ReLU, dropout 0.2), flattened
into a dense layer of 256 (batch norm, ReLU, dropout), then the classes. The input is the gap-filled
series of ``model.series`` as T dates x D channels (bands + indices). A second series on its own date
grid (S1 beside S2) is resampled onto the first one's days, linearly, edges replicated; so is any
series given at classification time on another date grid than the training one (another year's:
days count from 1 January), which is how a TempCNN maps a year it was not trained on.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from chain.deep.temporal import TemporalModel, TemporalSection
from chain.schema import ModelSection


class TempCNNModel(TemporalSection):
    type: Literal["tempcnn"]
    filters: int = Field(64, ge=1)
    kernel: int = Field(5, ge=1)  # odd: "same" padding keeps the series length
    conv_layers: int = Field(3, ge=1)
    dense: int = Field(256, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    # the reference implementation's schedule: Adam 1e-3, batch 32, 20 epochs
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _odd(self) -> TempCNNModel:
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (the series keeps its length), got {self.kernel}")
        return self


def resampling(src_days: list[int], dst_days: list[int]) -> np.ndarray:
    """(len(dst), len(src)) weights of linear interpolation from ``src_days`` onto ``dst_days``, edges replicated."""
    src = np.asarray(src_days, np.float64)
    w = np.zeros((len(dst_days), len(src)), np.float32)
    for i, d in enumerate(dst_days):
        if d <= src[0] or len(src) == 1:
            w[i, 0] = 1
        elif d >= src[-1]:
            w[i, -1] = 1
        else:
            j = int(np.searchsorted(src, d, side="right")) - 1
            f = (d - src[j]) / (src[j + 1] - src[j])
            w[i, j], w[i, j + 1] = 1 - f, f
    return w


class TempCNNNet(nn.Module):
    def __init__(self, n_classes: int, shapes: dict[str, dict[str, Any]], filters: int = 64, kernel: int = 5,
                 conv_layers: int = 3, dense: int = 256, dropout: float = 0.2, order: list[str] | None = None):
        super().__init__()
        self.names = order or list(shapes)  # model.series' order: manifests store shapes with sorted keys
        self.per_date = {k: s["channels"] // s["steps"] for k, s in shapes.items()}
        self.train_days = {k: list(s.get("days") or range(s["steps"])) for k, s in shapes.items()}
        self.target = self.train_days[self.names[0]]  # every series on the first one's training days
        channels = sum(self.per_date.values())
        layers: list[nn.Module] = []
        for i in range(conv_layers):
            layers += [nn.Conv1d(channels if i == 0 else filters, filters, kernel, padding=kernel // 2), nn.BatchNorm1d(filters),
                       nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(filters * len(self.target), dense), nn.BatchNorm1d(dense),
                                   nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head = nn.Linear(dense, n_classes)
        self.set_days(self.train_days)

    def set_days(self, days: dict[str, list[int]]) -> None:
        """The days of the series this network is given (by input): each is resampled onto the training days."""
        device = next(self.parameters()).device
        for k in self.names:
            self.register_buffer(f"w_{k}", torch.from_numpy(resampling(days[k], self.target)).to(device), persistent=False)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        parts = []
        for k in self.names:
            series = x[k].reshape(x[k].shape[0], -1, self.per_date[k])  # (n, T_k, D_k): time-major channels
            parts.append(torch.einsum("ts,nsd->ntd", getattr(self, f"w_{k}"), series))
        h = self.convs(torch.cat(parts, dim=2).transpose(1, 2))  # (n, filters, T)
        return {"fused": self.head(self.dense(h)), "aux": []}


class TempCNN(TemporalModel):
    name: ClassVar[str] = "tempcnn"
    config: ClassVar[type[ModelSection]] = TempCNNModel

    def min_dates(self, cfg: Any) -> int:
        return int(cfg.kernel)  # a series shorter than one convolution window

    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, Any]]) -> nn.Module:
        return TempCNNNet(n_classes, shapes, cfg.filters, cfg.kernel, cfg.conv_layers, cfg.dense, cfg.dropout, list(cfg.series))
