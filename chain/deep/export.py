"""A trained network as one self-contained file, to serve it elsewhere (``model.pt2`` beside ``model.pt``).

``torch.export`` (TorchScript is deprecated in recent PyTorch): the file takes the model's inputs
(patches, float32, in the manifest's ``inputs`` order, any batch size, raw values as the chain cuts
them: NaN for missing) and returns the class probabilities (n, K), in the order of the manifest's
``classes``. The normalisation is folded in as a fixed first layer, so the file needs nothing else:
``torch.export.load("model.pt2").module()(pan, ms)``, without this package; ``torch.onnx.export`` of
the same program gives ONNX (it needs the onnx and onnxscript packages, not dependencies here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chain.atomic import atomic_path


class Served(nn.Module):
    """normalise (the training statistics, NaN -> 0) -> network -> softmax of the fused head."""

    def __init__(self, net: nn.Module, names: list[str], mean: list[np.ndarray], std: list[np.ndarray]):
        super().__init__()
        self.net = net
        self.names = names
        for i, (m, s) in enumerate(zip(mean, std, strict=True)):
            self.register_buffer(f"mean_{i}", torch.as_tensor(m, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer(f"std_{i}", torch.as_tensor(s, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        batch = {}
        for i, name in enumerate(self.names):
            m, s = getattr(self, f"mean_{i}"), getattr(self, f"std_{i}")
            if m.shape[1] != xs[i].shape[1]:  # per-band statistics of a series, tiled over however many dates it has
                reps = xs[i].shape[1] // m.shape[1]
                m, s = m.repeat(1, reps, 1, 1), s.repeat(1, reps, 1, 1)
            x = (xs[i] - m) / s
            batch[name] = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        return torch.softmax(self.net(batch)["fused"].float(), dim=1)


def served(net: nn.Module, norm: Any, shapes: dict[str, dict[str, Any]], names: list[str]) -> Served:
    """The network with its normalisation folded in (per input: the channels' mean and std; per band for a series
    normalised over its dates, tiled at run time over the dates it is given: a temporal model maps another year's grid)."""
    mean, std = [], []
    for name in names:
        m, s = np.asarray(norm.mean[name], np.float32), np.asarray(norm.std[name], np.float32)
        reps = 1 if name in norm.period else int(shapes[name]["channels"]) // len(m)
        mean.append(np.tile(m, reps))
        std.append(np.tile(s, reps))
    return Served(net, names, mean, std).eval()


def examples(shapes: dict[str, dict[str, Any]], names: list[str], n: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(n, int(shapes[k]["channels"]), int(shapes[k]["size"]), int(shapes[k]["size"]), generator=g)
                 for k in names)


def export_program(path: Path, net: nn.Module, norm: Any, shapes: dict[str, dict[str, Any]], names: list[str]) -> None:
    """The served network (on CPU), exported with a dynamic batch dimension, into ``path`` atomically."""
    import warnings

    model = served(net.cpu().eval(), norm, shapes, names)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, examples(shapes, names), dynamic_shapes={"xs": tuple({0: batch} for _ in names)})
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
