"""Building blocks the torch networks share (each network lives in its model's module, chain/models/)."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int, padding: int | str = 0) -> nn.Sequential:
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
