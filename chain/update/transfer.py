"""Starting this year's network from last year's: its weights and input normalisation, then optionally
structured filter pruning (torch-pruning) before fine-tuning on this year's samples.

Pruning removes whole convolution filters (and what depends on them: batch-norm channels, the next layer's
input channels, a concatenation's slice, a head's input features), chosen per layer by a relevance criterion:
``l1`` (the filters' L1 weight norms) or ``activation_entropy`` (the entropy of each filter's activations over
this year's training patches: a filter whose output barely varies carries little information). The class
heads keep their outputs. torch-pruning does the graph surgery (the dependency graph through concatenations,
pooling and reshapes); the pruned network is saved with ``torch_pruning.state_dict`` so that loading rebuilds
the pruned shapes from the unpruned architecture.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.errors import StepError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from chain.deep.trainer import Normaliser
    from chain.update.options import PruneConfig

log = logging.getLogger(__name__)


@dataclass
class StartFrom:
    """Last year's model a network starts from: its folder, manifest, and what to do with it."""

    folder: Path
    manifest: dict[str, Any]
    lr_factor: float = 0.3
    prune: PruneConfig | None = None
    report: dict[str, Any] | None = None  # filled by prepare: parameters before / after, filters per layer

    @classmethod
    def of(cls, folder: Path, lr_factor: float, prune: PruneConfig | None) -> StartFrom:
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise StepError(f"train: last year's model {str(folder)!r} is missing (no manifest.json): run `chain run` on last "
                            "year's config to finish it, or set update.finetune: false")
        return cls(folder, json.loads(manifest_path.read_text()), lr_factor, prune)

    def lineage(self) -> dict[str, Any]:
        """What the manifest of the fine-tuned model records about where it comes from."""
        out = {"fine_tuned_from": str(self.folder), "lr_factor": self.lr_factor, "from_type": self.manifest.get("type"),
               "from_run": self.manifest.get("run"), "from_config_hash": self.manifest.get("config_hash"),
               "from_lineage": self.manifest.get("lineage")}
        if self.prune is not None:
            out["pruned"] = {"ratio": self.prune.ratio, "criterion": self.prune.criterion, **(self.report or {})}
        return out

    def check_classes(self, classes: list[int]) -> None:
        old = [int(c) for c in self.manifest["classes"]]
        if old != [int(c) for c in classes]:
            raise StepError(f"train: last year's model {str(self.folder)!r} knows the classes {old} but this year's training "
                            f"pixels have {list(classes)}: fine-tuning keeps the class head; set update.finetune: false to train "
                            "from scratch, or keep every class in the carried-over reference")

    def normaliser(self) -> Normaliser:
        from chain.deep.trainer import Normaliser

        n = self.manifest["normalisation"]
        return Normaliser(n["mean"], n["std"], n.get("period", {}))

    def prepare(self, net: nn.Module, example: dict[str, torch.Tensor]) -> nn.Module:
        """``net`` (this year's architecture, unpruned) with last year's weights, then pruned when asked."""
        load_into(net, self.folder, self.manifest)
        if self.prune is not None:
            self.report = prune(net, example, self.prune.ratio, self.prune.criterion, len(self.manifest["classes"]))
        return net


def load_into(net: nn.Module, folder: Path, manifest: dict[str, Any]) -> None:
    """Last year's ``model.pt`` into ``net``: a pruned model's shapes are rebuilt first (torch_pruning.load_state_dict)."""
    try:
        load_weights(net, folder / "model.pt", pruned=is_pruned(manifest))
    except (RuntimeError, KeyError) as exc:
        raise StepError(f"train: last year's weights in {str(folder)!r} do not fit this year's {manifest.get('type')} network "
                        f"({str(exc).splitlines()[0][:200]}): its architecture keys (sizes, widths, inputs) must be last "
                        "year's; set them as in last year's config, or update.finetune: false") from None


def is_pruned(manifest: dict[str, Any]) -> bool:
    return bool((manifest.get("lineage") or {}).get("pruned"))


def load_weights(net: nn.Module, path: Path, pruned: bool) -> None:
    """``path`` (``save_weights``) into ``net``; a pruned network's shapes are rebuilt from the unpruned ``net`` first."""
    import torch

    if pruned:
        import torch_pruning as tp

        tp.load_state_dict(net, state_dict=torch.load(path, map_location="cpu", weights_only=False))
    else:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def save_weights(net: nn.Module, path: Path, pruned: bool) -> None:
    import torch

    from chain.atomic import atomic_path

    with atomic_path(path) as tmp:
        if pruned:
            import torch_pruning as tp

            torch.save(tp.state_dict(net), tmp)
        else:
            torch.save(net.state_dict(), tmp)


def _logits(out: Any) -> torch.Tensor:
    """Every head's output summed into one tensor: torch-pruning traces the graph back from it (auxiliary heads too)."""
    if isinstance(out, dict):
        parts = [out["fused"], *out.get("aux", [])]
        return sum(p.float().sum() for p in parts)
    return out.float().sum()


def prune(net: nn.Module, example: dict[str, torch.Tensor], ratio: float, criterion: str, n_classes: int) -> dict[str, Any]:
    """Remove ``ratio`` of the convolution filters of ``net`` in place; returns parameters before/after and the filters
    kept per convolution."""
    import torch_pruning as tp
    from torch import nn

    convs = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    if not convs:
        raise StepError("train: update.prune removes convolution filters, and this network has no convolution; remove "
                        "update.prune")
    before = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))}
    n_before = sum(p.numel() for p in net.parameters())
    # the class heads keep their outputs; only convolutions are pruning roots (filter pruning)
    heads = [m for m in net.modules() if (isinstance(m, nn.Linear) and m.out_features == n_classes)
             or (isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.out_channels == n_classes)]
    importance: Any = tp.importance.GroupMagnitudeImportance(p=1) if criterion == "l1" else ActivationEntropy(net, example)
    was_training = net.training
    net.eval()
    pruner = tp.pruner.MetaPruner(net, example_inputs=example, importance=importance, pruning_ratio=ratio,
                                  ignored_layers=heads, root_module_types=[nn.Conv1d, nn.Conv2d],
                                  forward_fn=lambda m, x: m(x), output_transform=_logits)
    pruner.step()
    net.train(was_training)
    after = {n: m.out_channels for n, m in net.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))}
    n_after = sum(p.numel() for p in net.parameters())
    log.info("train: pruned %.0f %% of the filters (%s): %d -> %d parameters", 100 * ratio, criterion, n_before, n_after)
    return {"parameters_before": n_before, "parameters_after": n_after,
            "filters": {n: [before[n], after.get(n, before[n])] for n in before}}


class ActivationEntropy:
    """Filter relevance = entropy (bits) of the filter's activations over example patches (a 32-bin histogram of
    each output channel of each convolution, after the layer): low entropy = little information."""

    def __init__(self, net: nn.Module, example: dict[str, torch.Tensor], bins: int = 32):
        import torch
        from torch import nn

        self.entropy: dict[int, np.ndarray] = {}
        hooks = []

        def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            a = out.detach().float().transpose(0, 1).reshape(out.shape[1], -1).cpu().numpy()
            h = np.empty(a.shape[0])
            for c, v in enumerate(a):
                counts, _ = np.histogram(v, bins=bins)
                p = counts[counts > 0] / max(counts.sum(), 1)
                h[c] = float(-(p * np.log2(p)).sum())
            self.entropy[id(module)] = h

        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                hooks.append(m.register_forward_hook(hook))
        was = net.training
        net.eval()
        with torch.no_grad():
            net(example)
        net.train(was)
        for h in hooks:
            h.remove()

    def __call__(self, group: Any) -> torch.Tensor | None:
        import torch
        import torch_pruning as tp

        for dep, idxs in group:
            layer = dep.target.module
            if dep.handler in (tp.prune_conv_out_channels,) and id(layer) in self.entropy:
                return torch.as_tensor(self.entropy[id(layer)][list(idxs)], dtype=torch.float32)
        return None


def check_prunable(kind: Any, cfg: Any, spec: Any, cat: Any, ratio: float) -> None:
    """Prune a freshly built network of ``kind`` (random weights, random inputs of its shapes) and run it once: a type
    whose graph torch-pruning cannot follow is a config error before any heavy step, not a failure after training."""
    import torch

    from chain.deep import trainer
    from chain.errors import ConfigError

    if not kind.transferable:
        raise ConfigError(f"update.prune removes filters of a neural network, and model.type {cfg.type!r} is retrained from "
                          "scratch in an update; remove update.prune")
    inputs = kind.inputs(cfg, spec, cat)
    shapes = trainer.shapes_of(inputs, {i.name: i.channels(cat) for i in inputs})
    if kind.kind == "segmentation":
        shapes = {k: {**v, "size": 64} for k, v in shapes.items()}
    net = kind.network(cfg, 3, shapes)
    gen = torch.Generator().manual_seed(0)
    example = {k: torch.randn(2, int(v["channels"]), int(v["size"]), int(v["size"]), generator=gen) for k, v in shapes.items()}
    try:
        prune(net, example, ratio, "l1", 3)
        net.eval()
        with torch.no_grad():
            net(example)
    except Exception as exc:  # noqa: BLE001 - whatever torch-pruning or the pruned forward raises
        raise ConfigError(f"update.prune: torch-pruning cannot prune model.type {cfg.type!r}'s network consistently "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); fine-tune it unpruned (remove update.prune) "
                          "or use a type it prunes (fcn)") from None
