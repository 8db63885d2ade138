"""``model.type: ltae``: the Lightweight Temporal Attention Encoder on each pixel's series (Garnot & Landrieu 2020).

Each date of each series in ``model.series`` (bands + indices) is embedded linearly (one embedding
per source, so S1 and S2 dates mix in one sequence, each on its own date grid), projected to
``d_model`` and given a sinusoidal positional encoding of its *day* (counted from 1 January of the
series' first year, period ``period_days``), not of its rank: a series on another date grid, another
year's included, is encoded where its dates fall in the season. A learned master query per head
attends over the dates (``n_head`` heads, keys of ``d_k``), each head summing its own slice of the
channels; an MLP (``mlp``) and the decoder (``decoder``, then the classes) follow, as in the paper
(d_model 256, 16 heads, d_k 8, MLP 256-128, decoder 64-32, dropout 0.2, T = 1000).

``input: pixel_set`` (PSE-TAE: a pixel-set encoder over the pixels of an object or polygon) needs
objects to classify, which the chain does not make yet; it is refused with that reason.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from chain.deep.temporal import TemporalModel, TemporalSection
from chain.errors import ConfigError
from chain.schema import ModelSection


class LTAEModel(TemporalSection):
    type: Literal["ltae"]
    input: Literal["pixel", "pixel_set"] = "pixel"
    embedding: int = Field(128, ge=1)  # per-date embedding of the pixel's channels (the paper's PSE output size)
    d_model: int = Field(256, ge=1)
    n_head: int = Field(16, ge=1)
    d_k: int = Field(8, ge=1)
    mlp: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)  # first = d_model
    decoder: list[int] = Field(default_factory=lambda: [64, 32])
    period_days: float = Field(1000.0, gt=0)  # the positional encoding's T
    dropout: float = Field(0.2, ge=0, lt=1)
    # the reference schedule: Adam 1e-3, batch 128, 100 epochs (early stopping on the validation polygons with 64/16/20)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _sizes(self) -> LTAEModel:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head}): each head sums its share of the channels")
        if self.mlp[0] != self.d_model:
            raise ValueError(f"mlp must start with d_model ({self.d_model}), got {self.mlp}")
        return self


def positional_encoding(days: torch.Tensor, d: int, period: float) -> torch.Tensor:
    """(T, d) sinusoids of the days: sin / cos of day / period^(2i/d)."""
    i = torch.arange(d, dtype=torch.float32, device=days.device)
    angle = days.float()[:, None] / torch.pow(torch.tensor(period, device=days.device), 2 * torch.div(i, 2, rounding_mode="floor") / d)
    return torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))


def _mlp(sizes: list[int], dropout: float = 0.0, last_plain: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if not (last_plain and k == len(sizes) - 2):
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class LTAENet(nn.Module):
    def __init__(self, n_classes: int, shapes: dict[str, dict[str, Any]], embedding: int = 128, d_model: int = 256,
                 n_head: int = 16, d_k: int = 8, mlp: list[int] | None = None, decoder: list[int] | None = None,
                 period_days: float = 1000.0, dropout: float = 0.2, order: list[str] | None = None):
        super().__init__()
        mlp = mlp or [d_model, 128]
        decoder = [64, 32] if decoder is None else decoder
        self.names = order or list(shapes)  # model.series' order: manifests store shapes with sorted keys
        self.per_date = {k: s["channels"] // s["steps"] for k, s in shapes.items()}
        self.embed = nn.ModuleDict({k: nn.Linear(self.per_date[k], embedding) for k in self.names})
        self.in_norm = nn.LayerNorm(embedding)
        self.project = nn.Linear(embedding, d_model)
        self.n_head, self.d_k, self.d_model, self.period = n_head, d_k, d_model, period_days
        self.keys = nn.Linear(d_model, n_head * d_k)
        self.query = nn.Parameter(torch.randn(n_head, d_k) / math.sqrt(d_k))
        self.mlp = _mlp(mlp, dropout)
        self.out_norm = nn.LayerNorm(mlp[-1])
        self.decoder = _mlp([mlp[-1], *decoder, n_classes], last_plain=True)
        self.set_days({k: list(s.get("days") or range(s["steps"])) for k, s in shapes.items()})

    def set_days(self, days: dict[str, list[int]]) -> None:
        """The days of the series this network is given (by input): where their dates are encoded."""
        pos = np.concatenate([np.asarray(days[k], np.float32) for k in self.names])
        self.register_buffer("days", torch.from_numpy(pos).to(self.query.device), persistent=False)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        tokens = [self.embed[k](x[k].reshape(x[k].shape[0], -1, self.per_date[k])) for k in self.names]  # (n, T_k, E)
        h = self.project(self.in_norm(torch.cat(tokens, dim=1)))  # (n, T, d_model)
        days: torch.Tensor = self.days  # type: ignore[assignment]
        h = h + positional_encoding(days, self.d_model, self.period)[None]
        n, t, _ = h.shape
        k = self.keys(h).view(n, t, self.n_head, self.d_k)
        attention = torch.softmax(torch.einsum("nthk,hk->nht", k, self.query) / math.sqrt(self.d_k), dim=2)  # over dates
        values = h.view(n, t, self.n_head, self.d_model // self.n_head)  # each head sums its slice of the channels
        out = torch.einsum("nht,nthc->nhc", attention, values).reshape(n, self.d_model)
        return {"fused": self.decoder(self.out_norm(self.mlp(out))), "aux": []}


class LTAE(TemporalModel):
    name: ClassVar[str] = "ltae"
    config: ClassVar[type[ModelSection]] = LTAEModel

    def check(self, cfg: Any, spec: Any, cat: Any) -> None:
        if cfg.input == "pixel_set":
            raise ConfigError("model.input: pixel_set (PSE-TAE) encodes the pixels of an object or polygon to classify, and the "
                              "chain does not make objects yet; use input: pixel (each pixel's series)")
        super().check(cfg, spec, cat)

    def network(self, cfg: Any, n_classes: int, shapes: dict[str, dict[str, Any]]) -> nn.Module:
        return LTAENet(n_classes, shapes, cfg.embedding, cfg.d_model, cfg.n_head, cfg.d_k, list(cfg.mlp), list(cfg.decoder),
                       cfg.period_days, cfg.dropout, list(cfg.series))
