"""The patch models: MultiResoLCC, M3Fusion and TWINNS (PyTorch).

Every network takes a dict of normalised input tensors (names as in ``chain.deep.inputs``: (n, C,
s, s), series time-major in C) and returns ``{"fused": logits, "aux": [logits of each branch]}``;
the trainer's loss is CE(fused) + aux_weight x sum CE(aux). Sizes are constructor arguments
(the config's model section); defaults follow the papers. Choices the papers leave open are in
docs/deep.md.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chain.errors import ConfigError


def _conv(cin: int, cout: int, k: int, padding: int | str = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AdditiveAttention(nn.Module):
    """Weighted sum of a sequence's states: score_t = v . tanh(W h_t + b), softmax over time."""

    def __init__(self, units: int):
        super().__init__()
        self.proj = nn.Linear(units, units)
        self.score = nn.Linear(units, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (n, T, U) -> (n, U)
        alpha = torch.softmax(self.score(torch.tanh(self.proj(h))), dim=1)
        return (alpha * h).sum(dim=1)


class MultiResoLCC(nn.Module):
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
        self.pan = nn.Sequential(_conv(pan_bands, p1, 3), nn.MaxPool2d(2), _conv(p1, p2, 3), nn.MaxPool2d(2), _conv(p2, p3, 3),
                                 nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.ms = nn.Sequential(_conv(ms_bands, m1, 3), _conv(m1, m2, 3), _conv(m2, m3, 3),
                                nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(p3 + m3, n_classes)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"fused": self.head(torch.cat([self.pan(x["pan"]), self.ms(x["ms"])], dim=1)), "aux": []}


class M3Fusion(nn.Module):
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
        self.block1 = nn.Sequential(_conv(vhr_bands, c1, 7), nn.MaxPool2d(2), _conv(c1, c2, 3))
        self.block2 = _conv(c2, c2, 3, padding=1)
        self.fuse = nn.Sequential(_conv(2 * c2, c2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
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


class ConvGRUCell(nn.Module):
    """A GRU whose gates are 3x3 convolutions: one hidden state per pixel of the patch."""

    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 2 * hidden, 3, padding=1)
        self.candidate = nn.Conv2d(cin + hidden, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * n


class SensorTwin(nn.Module):
    """One sensor's pair of branches: ConvGRU over the patch sequence (+ attention), CNN on the dates stacked."""

    def __init__(self, steps: int, per_step: int, rnn_units: int, cnn_channels: tuple[int, int], dropout: float):
        super().__init__()
        self.steps, self.per_step = steps, per_step
        self.cell = ConvGRUCell(per_step, rnn_units)
        self.attention = AdditiveAttention(rnn_units)
        c1, c2 = cnn_channels
        self.cnn = nn.Sequential(_conv(steps * per_step, c1, 3, padding=1), _conv(c1, c2, 3, padding=1),
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


class TWINNS(nn.Module):
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
        return {"fused": self.head(torch.cat(parts, dim=1)), "aux": [h(p) for h, p in zip(self.aux, parts)]}


def build(model: Any, n_classes: int, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """The network for a model config; ``shapes``: per input, channels / size / steps."""
    if model.type == "multiresolcc":
        return MultiResoLCC(n_classes, shapes["pan"]["channels"], shapes["ms"]["channels"], shapes["pan"]["size"],
                            shapes["ms"]["size"], tuple(model.pan_channels), tuple(model.ms_channels), model.dropout)
    if model.type == "m3fusion":
        s2 = shapes["s2"]
        return M3Fusion(n_classes, s2["steps"], s2["channels"] // s2["steps"], shapes["vhr"]["channels"], shapes["vhr"]["size"],
                        model.rnn_units, tuple(model.cnn_channels), model.dropout)
    if model.type == "twinns":
        s2, s1 = shapes["s2"], shapes["s1"]
        return TWINNS(n_classes, s2["steps"], s2["channels"] // s2["steps"], s1["steps"], s1["channels"] // s1["steps"],
                      model.rnn_units, tuple(model.cnn_channels), model.dropout)
    raise ConfigError(f"model.type {model.type!r} is not a torch model")
