"""One trainer for every torch model: normalisation, batches, losses, schedule, early stopping, artifact.

Seeded and deterministic on CPU (same seed and samples: same weights). On CUDA it uses mixed
precision, pinned memory and DataLoader workers. The artifact is ``model.pt`` (weights) +
``manifest.json`` (architecture and its parameters, classes, inputs, normalisation, versions,
config hash) + ``curves.png``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from chain.atomic import atomic_path, write_json
from chain.deep.inputs import PatchInput
from chain.errors import ConfigError, StepError
from chain.log import Progress

if TYPE_CHECKING:
    from chain.update.transfer import StartFrom

# the model type's network for (number of classes, input shapes)
Network = Callable[[int, dict[str, dict[str, int]]], nn.Module]

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device is {name!r} but torch sees no CUDA device here; use 'auto' or 'cpu'")
    return torch.device(name)


@dataclass
class Normaliser:
    """Per-input, per-channel mean and std (from the training patches); NaN (missing feature) -> 0 after.

    With ``period`` (input name -> channels per date), a series is normalised per band, the same over
    all its dates: what temporal models need to take a series on another date grid than the training one.
    """

    mean: dict[str, list[float]]
    std: dict[str, list[float]]
    period: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, patches: dict[str, np.ndarray], period: dict[str, int] | None = None, chunk_bytes: int = 16 * 2**20) -> Normaliser:
        """Streamed over chunks of samples with float64 sums (count, sum, sum of squares per channel): memory is one
        chunk (``chunk_bytes`` in float64) whatever the training set's size, never a float64 copy of it."""
        mean, std, period = {}, {}, period or {}
        for name, x in patches.items():
            per_sample = int(np.prod(x.shape[1:])) or 1
            step = max(1, chunk_bytes // (8 * per_sample))
            n_ch = int(period[name]) if name in period else int(x.shape[1])
            count, s1, s2 = np.zeros(n_ch), np.zeros(n_ch), np.zeros(n_ch)
            for a in range(0, x.shape[0], step):
                c = x[a:a + step].astype(np.float64)
                if name in period:  # (n, T x D, s, s) -> per band over samples, dates and pixels
                    c = c.reshape(c.shape[0], -1, period[name], *c.shape[2:]).swapaxes(1, 2)
                c = c.swapaxes(0, 1).reshape(n_ch, -1)  # (channels, everything else)
                ok = np.isfinite(c)
                c = np.where(ok, c, 0.0)
                count += ok.sum(axis=1)
                s1 += c.sum(axis=1)
                s2 += (c * c).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                m = s1 / count
                s = np.sqrt(np.maximum(s2 / count - m * m, 0.0))
            mean[name] = np.nan_to_num(m).tolist()
            std[name] = np.where(np.isfinite(s) & (s > 1e-12), s, 1.0).tolist()
        return cls(mean, std, dict(period))

    def apply(self, name: str, x: np.ndarray) -> np.ndarray:
        m = np.asarray(self.mean[name], np.float32)
        s = np.asarray(self.std[name], np.float32)
        if name in self.period:  # tiled over however many dates the series has
            reps = x.shape[1] // len(m)
            m, s = np.tile(m, reps), np.tile(s, reps)
        return np.nan_to_num((x.astype(np.float32) - m[None, :, None, None]) / s[None, :, None, None], nan=0.0, posinf=0.0, neginf=0.0)


def days(dates: tuple[str, ...] | list[str]) -> list[int]:
    """Day offsets of ISO dates from 1 January of the first one's year: the same for the same season of another year."""
    import datetime as dt

    if not dates:
        return []
    origin = dt.date(dt.date.fromisoformat(dates[0]).year, 1, 1)
    return [(dt.date.fromisoformat(d) - origin).days for d in dates]


def shapes_of(inputs: list[PatchInput], channels: dict[str, int]) -> dict[str, dict[str, Any]]:
    return {i.name: {"channels": channels[i.name], "size": i.size, "steps": i.steps, **({"days": days(i.dates)} if i.dates else {})}
            for i in inputs}


def _augment(batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The same random rotation / flip / transposition (one of 8) for all of a sample's patches."""
    n = next(iter(batch.values())).shape[0]
    choice = torch.randint(0, 8, (n,), generator=gen)
    out = {k: v.clone() for k, v in batch.items()}
    for k in range(1, 8):
        sel = choice == k
        if not sel.any():
            continue
        for name, v in batch.items():
            x = torch.rot90(v[sel], k % 4, dims=(2, 3))
            out[name][sel] = x.transpose(2, 3) if k >= 4 else x
    return out


def _losses(out: dict[str, Any], y: torch.Tensor, criterion: nn.Module, aux_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss trained on: the fused head's plus the weighted auxiliary heads', the fused head's alone)."""
    main = criterion(out["fused"], y)
    loss = main
    for aux in out["aux"]:
        loss = loss + aux_weight * criterion(aux, y)
    return loss, main


def _to_tensors(patches: dict[str, np.ndarray], norm: Normaliser, chunk: int = 4096) -> dict[str, torch.Tensor]:
    # float16 in memory halves the footprint; batches are cast to float32 on the way in. Normalised a chunk of samples
    # at a time into the float16 array, so that no float32 copy of the whole set is ever made
    out = {}
    for k, v in patches.items():
        dst = np.empty(v.shape, np.float16)
        for a in range(0, v.shape[0], chunk):
            dst[a:a + chunk] = norm.apply(k, v[a:a + chunk])
        out[k] = torch.from_numpy(dst)
    return out


def evaluate(net: nn.Module, data: dict[str, torch.Tensor], y: torch.Tensor, criterion: nn.Module, aux_weight: float,
             device: torch.device, batch: int) -> tuple[float, float]:
    net.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(y), batch):
            xb = {k: v[s:s + batch].to(device).float() for k, v in data.items()}
            yb = y[s:s + batch].to(device)
            out = net(xb)
            total += float(_losses(out, yb, criterion, aux_weight)[1]) * len(yb)  # the fused head's: what the map uses
            correct += int((out["fused"].argmax(1) == yb).sum())
    return total / max(len(y), 1), correct / max(len(y), 1)


def train(model_cfg: Any, network: Network, inputs: list[PatchInput], channels: dict[str, int], classes: list[int],
          train_patches: dict[str, np.ndarray], y_train: np.ndarray, val_patches: dict[str, np.ndarray] | None,
          y_val: np.ndarray | None, seed: int, checkpoint: Path | None = None, period: dict[str, int] | None = None,
          start: StartFrom | None = None) -> tuple[nn.Module, Normaliser, list[dict[str, float]]]:
    """Fit the network of ``model_cfg``; returns (best network on CPU, normaliser, history per epoch).

    With ``checkpoint``, the whole training state (weights, optimiser, schedule, best epoch, random
    generators) is saved there after every epoch, and a training that finds one resumes after its
    last epoch: a killed training, restarted, ends with the same weights as an uninterrupted one.
    """
    device = resolve_device(model_cfg.device)
    threads = training_threads(model_cfg)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(model_cfg, network, inputs, channels, classes, train_patches, y_train, val_patches, y_val, seed, checkpoint,
                      period, device, threads, start)
    finally:
        torch.set_num_threads(previous)


def training_threads(model_cfg: Any) -> int:
    """``model.torch_threads``, else the cores allotted to this process (``chain.resources.allotted_cores``)."""
    from chain.resources import allotted_cores

    return int(getattr(model_cfg, "torch_threads", None) or allotted_cores())


def _train(model_cfg: Any, network: Network, inputs: list[PatchInput], channels: dict[str, int], classes: list[int],
           train_patches: dict[str, np.ndarray], y_train: np.ndarray, val_patches: dict[str, np.ndarray] | None,
           y_val: np.ndarray | None, seed: int, checkpoint: Path | None, period: dict[str, int] | None, device: torch.device,
           threads: int, init: StartFrom | None = None) -> tuple[nn.Module, Normaliser, list[dict[str, float]]]:
    log.info("train: %s on %s, %d CPU thread(s)", model_cfg.type, device, threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    norm = init.normaliser() if init is not None else Normaliser.fit(train_patches, period)
    index = {c: i for i, c in enumerate(classes)}
    ytr = torch.as_tensor(np.vectorize(index.get)(y_train), dtype=torch.long)
    xtr = _to_tensors(train_patches, norm)
    xval = yval = None
    if val_patches is not None and y_val is not None and len(y_val):
        keep = np.isin(y_val, classes)
        xval = _to_tensors({k: v[keep] for k, v in val_patches.items()}, norm)
        yval = torch.as_tensor(np.vectorize(index.get)(y_val[keep]), dtype=torch.long)
    net = network(len(classes), shapes_of(inputs, channels))
    if init is not None:  # last year's weights (and normaliser, above), pruned when asked
        net = init.prepare(net, {k: v[:256].float() for k, v in xtr.items()})
    net = net.to(device)
    weight = None
    if model_cfg.class_weights:
        counts = np.bincount(ytr.numpy(), minlength=len(classes)).astype(np.float64)
        weight = torch.as_tensor(len(ytr) / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.Adam(net.parameters(), lr=model_cfg.lr * (init.lr_factor if init is not None else 1.0))
    sched = torch.optim.lr_scheduler.StepLR(opt, model_cfg.lr_step_epochs, model_cfg.lr_gamma) if model_cfg.lr_step_epochs else None
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    names = list(xtr)
    dataset = torch.utils.data.TensorDataset(*[xtr[k] for k in names], ytr)
    sampler = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(dataset, generator=gen), model_cfg.batch_size, drop_last=False)
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=model_cfg.num_workers,
                                         pin_memory=cuda, persistent_workers=model_cfg.num_workers > 0)
    augment = getattr(model_cfg, "augment", False)
    # the best epoch and early stopping look at the fused head's loss (the map's), not at the auxiliary heads'
    state = EpochState(net, opt, sched, scaler, gen, "val_loss" if yval is not None else "train_main_loss", model_cfg.patience)
    state.resume(checkpoint, device, model_cfg.epochs)
    history, start, stopped = state.history, state.start, state.stopped
    # a bar on a terminal; the log gets one line per epoch below, with its losses
    with Progress(model_cfg.epochs, f"train: {model_cfg.type}", log, unit="epoch", log_lines=False) as bar:
        bar.update(start)
        for epoch in range(start, model_cfg.epochs if not stopped else start):
            net.train()
            t0, total, total_main, seen = time.time(), 0.0, 0.0, 0
            batches = Progress(len(sampler), f"epoch {epoch + 1}", log, unit="batch", log_lines=False)
            for *xs, yb in loader:
                batches.update()
                xb = {k: v.to(device, non_blocking=cuda).float() for k, v in zip(names, xs, strict=False)}
                if augment:
                    xb = _augment(xb, gen)
                yb = yb.to(device, non_blocking=cuda)
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
                    loss, main = _losses(net(xb), yb, criterion, model_cfg.aux_weight)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                total += float(loss.detach()) * len(yb)
                total_main += float(main.detach()) * len(yb)
                seen += len(yb)
            batches.close()
            if sched is not None:
                sched.step()
            row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "train_main_loss": total_main / max(seen, 1),
                   "seconds": time.time() - t0,
                   "samples_per_s": seen / max(time.time() - t0, 1e-9), "lr": opt.param_groups[0]["lr"],
                   "threads": torch.get_num_threads()}
            if xval is not None and yval is not None:
                row["val_loss"], row["val_acc"] = evaluate(net, xval, yval, criterion, model_cfg.aux_weight, device,
                                                           model_cfg.inference_batch)
            history.append(row)
            log.info("train: epoch %d/%d: loss %.4f%s (%.0f samples/s)", epoch + 1, model_cfg.epochs, row["train_loss"],
                     f", validation loss {row['val_loss']:.4f}, accuracy {row['val_acc']:.3f}" if "val_loss" in row else "",
                     row["samples_per_s"])
            bar.update()
            stopped = state.end_epoch(epoch, row, checkpoint)
            _epoch_done(epoch + 1)
            if stopped:
                break
    return state.best_network(), norm, history


class EpochState:
    """What an epoch loop keeps between epochs, the same for every trainer: the history, the best epoch's weights,
    early stopping, and the checkpoint of the whole state (weights, optimiser, schedule, scaler, random generators)
    that a killed training resumes from to the same weights."""

    def __init__(self, net: nn.Module, opt: Any, sched: Any, scaler: Any, gen: torch.Generator, monitor: str,
                 patience: int | None):
        self.net, self.opt, self.sched, self.scaler, self.gen = net, opt, sched, scaler, gen
        self.monitor, self.patience = monitor, patience
        self.history: list[dict[str, float]] = []
        self.best, self.waited, self.start, self.stopped = float("inf"), 0, 0, False
        self.best_state: dict[str, Any] | None = None

    def resume(self, checkpoint: Path | None, device: torch.device, epochs: int) -> None:
        if checkpoint is None or not checkpoint.exists():
            return
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None:
            self.sched.load_state_dict(state["sched"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.history, self.best, self.best_state, self.waited = state["history"], state["best"], state["best_state"], state["waited"]
        self.start, self.stopped = state["epoch"], state["stopped"]
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        log.info("train: resuming after epoch %d of %d (checkpoint %s)", self.start, epochs, checkpoint)

    def end_epoch(self, epoch: int, row: dict[str, float], checkpoint: Path | None) -> bool:
        """Keep the weights when ``row`` (appended to the history by the caller) is the best so far, count towards early
        stopping, checkpoint; True when training stops here."""
        if row[self.monitor] < self.best - 1e-6:
            self.best, self.waited = row[self.monitor], 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.net.state_dict().items()})
        else:
            self.waited += 1
            if self.patience and self.waited >= self.patience:
                log.info("train: early stop after epoch %d (%s did not improve for %d epochs)", epoch + 1, self.monitor, self.waited)
                self.stopped = True
        if checkpoint is not None:
            with atomic_path(checkpoint) as tmp:
                torch.save({"epoch": epoch + 1, "net": self.net.state_dict(), "opt": self.opt.state_dict(),
                            "sched": self.sched.state_dict() if self.sched is not None else None,
                            "scaler": self.scaler.state_dict() if self.scaler is not None else None, "history": self.history,
                            "best": self.best, "best_state": self.best_state, "waited": self.waited, "stopped": self.stopped,
                            "gen": self.gen.get_state(), "rng": torch.get_rng_state()}, tmp)
        return self.stopped

    def best_network(self) -> nn.Module:
        """The network on CPU with the best epoch's weights, in eval mode."""
        net = self.net.cpu()
        if self.best_state is not None:
            net.load_state_dict(self.best_state)
        net.eval()
        return net


def _epoch_done(epoch: int) -> None:
    """Called after each epoch's checkpoint (a seam for tests that interrupt a training)."""


def save(folder: Path, net: nn.Module, norm: Normaliser, history: list[dict[str, float]], manifest: dict[str, Any]) -> None:
    """Weights, curves, then the manifest (last: a folder with a manifest holds a complete model)."""
    from chain.models import save_manifest

    folder.mkdir(parents=True, exist_ok=True)
    from chain.update.transfer import is_pruned, save_weights

    save_weights(net, folder / "model.pt", pruned=is_pruned(manifest))
    if manifest.get("inputs") and manifest.get("shapes"):
        from chain.deep.export import export_program

        # the same network as one file with its normalisation, for serving elsewhere (chain.deep.export). An extra: a
        # network torch.export cannot take (TempCNN over two series of different date grids, with torch 2.13) is still
        # a complete model for the chain, so a failure is a warning
        try:
            export_program(folder / "model.pt2", net, norm, manifest["shapes"], [i["name"] for i in manifest["inputs"]])
        except Exception as exc:  # noqa: BLE001 - any exporter failure
            (folder / "model.pt2").unlink(missing_ok=True)
            log.warning("train: %s not exported to model.pt2 (torch.export: %s); model.pt serves the chain as usual",
                        manifest.get("type"), str(exc).splitlines()[0][:200])
    write_json(folder / "history.json", history)
    plot_curves(history, folder / "curves.png")
    save_manifest(folder, {**manifest, "normalisation": {"mean": norm.mean, "std": norm.std, "period": norm.period}})


def load(folder: Path, manifest: dict[str, Any], network: Network) -> tuple[nn.Module, Normaliser]:
    from chain.update.transfer import is_pruned, load_weights

    net = network(len(manifest["classes"]), manifest["shapes"])
    try:
        load_weights(net, folder / "model.pt", pruned=is_pruned(manifest))  # pruned: shapes rebuilt from the unpruned net
    except (RuntimeError, FileNotFoundError, KeyError) as exc:
        raise StepError(f"model weights in {str(folder)!r} do not match the manifest ({exc}); re-run training") from None
    net.eval()
    norm = manifest["normalisation"]
    return net, Normaliser(norm["mean"], norm["std"], norm.get("period", {}))


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    from chain.report import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ep = [h["epoch"] for h in history]
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train")
    if history and "val_loss" in history[0]:
        ax[0].plot(ep, [h["val_loss"] for h in history], label="validation")
        ax[1].plot(ep, [h["val_acc"] for h in history], color="C1")
        ax[1].set_ylabel("validation accuracy")
    else:
        ax[1].text(0.5, 0.5, "no validation set (30/70 split)", ha="center", va="center", transform=ax[1].transAxes)
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].legend()
    ax[1].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
