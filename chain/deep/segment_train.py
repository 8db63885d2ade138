"""Training a segmentation network on sparse labels: tiles around the training polygons, weight 0 elsewhere.

Each epoch visits every training tile once in a seeded random order, as a random crop (the tiles are
read with a margin) under one of the 8 rotations / flips; the loss is the class-weighted cross-entropy
over the labelled pixels only (label -1: weight 0). With a ``teacher`` (knowledge distillation), the
student's fine-resolution logits also follow the teacher's, softened by a temperature, on every pixel
of the crop, labelled or not: that is where the teacher's knowledge of small objects reaches the
student. The best epoch is the one with the lowest loss on the validation polygons' pixels (64/16/20;
the training loss with 30/70). Resumable like the patch trainer: the whole state is checkpointed after
each epoch, and a resumed training ends with the same weights (CPU).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from chain.deep.segment import LabelledTiles
from chain.deep.trainer import EpochState, Normaliser, _augment, _epoch_done, _to_tensors, resolve_device, training_threads
from chain.log import Progress

if TYPE_CHECKING:
    from chain.update.transfer import StartFrom

log = logging.getLogger(__name__)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse frequency of each class over the labelled pixels (mean 1 over the pixels); 1 for absent classes."""
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 1.0)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softened per-pixel distributions, x T^2 (Hinton et al.), mean over pixels."""
    t = torch.softmax(teacher.float() / temperature, dim=1)
    s = torch.log_softmax(student.float() / temperature, dim=1)
    return (t * (torch.log(t.clamp_min(1e-12)) - s)).sum(dim=1).mean() * temperature**2


def _crops(x: dict[str, torch.Tensor], y: torch.Tensor, idx: torch.Tensor, size: int, gen: torch.Generator | None
           ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Crops of ``size`` px of tiles ``idx``: at random offsets (``gen``), or centred (validation)."""
    span = y.shape[-1]
    room = span - size
    if gen is None or room == 0:
        offs = [(room // 2, room // 2)] * len(idx)
    else:
        offs = torch.randint(0, room + 1, (len(idx), 2), generator=gen).tolist()
    xb = {k: torch.stack([v[i, :, a:a + size, b:b + size] for i, (a, b) in zip(idx.tolist(), offs, strict=True)]) for k, v in x.items()}
    yb = torch.stack([y[i, a:a + size, b:b + size] for i, (a, b) in zip(idx.tolist(), offs, strict=True)])
    return xb, yb


def evaluate(net: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor, size: int, criterion: nn.Module, device: torch.device,
             batch: int) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over the labelled pixels of the tiles' central crops."""
    net.eval()
    total, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, len(y), batch):
            idx = torch.arange(s, min(s + batch, len(y)))
            xb, yb = _crops(x, y, idx, size, None)
            xb = {k: v.to(device).float() for k, v in xb.items()}
            yb = yb.to(device)
            logits = net(xb)["fused"].float()
            n = int((yb >= 0).sum())
            if n:
                total += float(criterion(logits, yb)) * n
                correct += int(((logits.argmax(1) == yb) & (yb >= 0)).sum())
                seen += n
    return total / max(seen, 1), correct / max(seen, 1)


def train(model_cfg: Any, network: Callable[[], nn.Module], train_tiles: LabelledTiles, val_tiles: LabelledTiles | None,
          n_classes: int, crop: int, seed: int, checkpoint: Path | None = None, teacher: nn.Module | None = None,
          norm: Normaliser | None = None, start: StartFrom | None = None) -> tuple[nn.Module, Normaliser, list[dict[str, float]]]:
    """Fit ``network()`` on the training tiles; returns (best network on CPU, normaliser, history per epoch).
    ``teacher`` (with ``norm``, the teacher's normaliser, shared so that both see the same inputs): distillation.
    ``start``: last year's network to fine-tune (its weights and normaliser; pruned when asked)."""
    device = resolve_device(model_cfg.device)
    threads = training_threads(model_cfg)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(model_cfg, network, train_tiles, val_tiles, n_classes, crop, seed, checkpoint, teacher, norm, device, threads,
                      start)
    finally:
        torch.set_num_threads(previous)


def _train(model_cfg: Any, network: Callable[[], nn.Module], tr: LabelledTiles, val: LabelledTiles | None, n_classes: int, crop: int,
           seed: int, checkpoint: Path | None, teacher: nn.Module | None, norm: Normaliser | None, device: torch.device,
           threads: int, init: StartFrom | None = None) -> tuple[nn.Module, Normaliser, list[dict[str, float]]]:
    role = "student (distilled)" if teacher is not None else model_cfg.type
    log.info("train: %s on %s, %d CPU thread(s), %d training tiles of %d px (crops of %d)", role, device, threads, len(tr.labels),
             tr.labels.shape[-1], crop)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)  # (max-unpooling's warning: filtered in chain.models.fcn)
    norm = norm or (init.normaliser() if init is not None else Normaliser.fit(tr.arrays))
    xtr, ytr = _to_tensors(tr.arrays, norm), torch.as_tensor(tr.labels)
    xval = yval = None
    if val is not None and len(val.labels):
        xval, yval = _to_tensors(val.arrays, norm), torch.as_tensor(val.labels)
    net = network()
    if init is not None:
        net = init.prepare(net, {k: v[:4].float() for k, v in xtr.items()})
    net = net.to(device)
    weight = torch.as_tensor(class_weights(tr.labels, n_classes), dtype=torch.float32, device=device) if model_cfg.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=-1)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=model_cfg.lr * (init.lr_factor if init is not None else 1.0))
    sched = torch.optim.lr_scheduler.StepLR(opt, model_cfg.lr_step_epochs, model_cfg.lr_gamma) if model_cfg.lr_step_epochs else None
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    state = EpochState(net, opt, sched, scaler, gen, "val_loss" if yval is not None else "train_main_loss", model_cfg.patience)
    state.resume(checkpoint, device, model_cfg.epochs)
    history, start, stopped = state.history, state.start, state.stopped
    names = list(xtr)
    with Progress(model_cfg.epochs, f"train: {role}", log, unit="epoch", log_lines=False) as bar:
        bar.update(start)
        for epoch in range(start, model_cfg.epochs if not stopped else start):
            net.train()
            t0, total, total_main, seen, pixels = time.time(), 0.0, 0.0, 0, 0
            order = torch.randperm(len(ytr), generator=gen)
            for s in range(0, len(order), model_cfg.batch_size):
                xb, yb = _crops(xtr, ytr, order[s:s + model_cfg.batch_size], crop, gen)
                aug = _augment({**xb, "__y": yb[:, None]}, gen) if getattr(model_cfg, "augment", True) else {**xb, "__y": yb[:, None]}
                yb = aug.pop("__y")[:, 0].to(device, non_blocking=cuda)
                xb = {k: aug[k].to(device, non_blocking=cuda).float() for k in names}
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
                    out = net(xb)
                    main = criterion(out["fused"].float(), yb)
                    loss = main
                    if teacher is not None:
                        with torch.no_grad():
                            target = teacher(xb)["fine"]
                        loss = (1 - model_cfg.distill_weight) * main + model_cfg.distill_weight * distill_loss(
                            out["fine"], target, model_cfg.distill_temperature)
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
                pixels += int((yb >= 0).sum())
            if sched is not None:
                sched.step()
            elapsed = max(time.time() - t0, 1e-9)
            row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "train_main_loss": total_main / max(seen, 1),
                   "seconds": elapsed, "samples_per_s": seen * crop * crop / elapsed, "labelled_pixels": pixels,
                   "lr": opt.param_groups[0]["lr"], "threads": torch.get_num_threads()}
            if xval is not None and yval is not None:
                row["val_loss"], row["val_acc"] = evaluate(net, xval, yval, crop, criterion, device, model_cfg.batch_size)
            history.append(row)
            log.info("train: epoch %d/%d: loss %.4f%s (%.0f px/s)", epoch + 1, model_cfg.epochs, row["train_loss"],
                     f", validation loss {row['val_loss']:.4f}, pixel accuracy {row['val_acc']:.3f}" if "val_loss" in row else "",
                     row["samples_per_s"])
            bar.update()
            stopped = state.end_epoch(epoch, row, checkpoint)
            _epoch_done(epoch + 1)
            if stopped:
                break
    return state.best_network(), norm, history
