"""Cross-year matching with a siamese network: is a reference polygon's land cover the same as last year?

Each year's gap-filled series is summarised per channel over its dates (mean, standard deviation, 10th, 50th
and 90th percentiles): a vector of fixed length whatever the dates, and by construction little moved by a
shift of the season. A small convolutional encoder, shared by both years, maps a patch of these summaries
around a pixel to an L2-normalised descriptor. It is trained self-supervised on the two years' imagery at
the reference polygons' pixels: the two years of one place are a corresponding pair, the other places of
the batch are not (a symmetric InfoNCE loss; other pixels of the same polygon are left out of the
negatives). No label of this year is needed. A polygon's score is the mean cosine similarity of its
pixels' descriptors across the years: land cover that changed looks like another place.

Cross-fitting: the polygons are dealt into ``folds``; each fold is scored by an encoder trained on the other folds
only (an encoder trained on a changed polygon learns its two years as "the same place", and would score it as
unchanged). On each fold the retrieval figure of the prior work is measured: given a polygon's descriptor of last
year, is its own place among the 5 most similar of this year's in the fold (mean average precision at 5; the
chance level beside it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from chain.errors import StepError

if TYPE_CHECKING:
    from pathlib import Path

    import geopandas as gpd
    import torch

    from chain.catalog import Catalog
    from chain.grid import GridSpec, Tile
    from chain.spec import FeatureSpec
    from chain.update.options import SiameseConfig

log = logging.getLogger(__name__)

STATS = ("mean", "std", "p10", "p50", "p90")


def summary_names(spec: FeatureSpec) -> list[str]:
    """The channels of ``summaries``: each series channel x STATS, then the features that are not series."""
    out: list[str] = []
    for g in spec.groups:
        if g.is_series:
            out += [f"{g.label}_{c}_{s}" for c in g.channels for s in STATS]
        else:
            out += list(g.names)
    return out


def summaries(values: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(F, h, w) features -> (S, h, w) float32: every series channel summarised over its dates (``summary_names``)."""
    out: list[np.ndarray] = []
    offset = 0
    for g in spec.groups:
        if g.is_series:
            for idx in g.time_major(offset):
                s = values[idx]  # (T, h, w)
                q = np.percentile(s, (10, 50, 90), axis=0)
                out += [s.mean(0), s.std(0), q[0], q[1], q[2]]
        else:
            out += list(values[offset:offset + len(g.names)])
        offset += len(g.names)
    return np.stack(out).astype(np.float32)


def polygon_points(polys: gpd.GeoDataFrame, transform: Any, shape: tuple[int, int], k: int, seed: int) -> np.ndarray:
    """Up to ``k`` distinct pixels (row, col) whose centre lies in each polygon, drawn with a seed per polygon
    (its representative point when the polygon holds no pixel centre): (n, 3) int64 rows of (poly_id, row, col)."""
    import shapely

    from chain.seeds import rng

    inv = ~transform
    rows: list[np.ndarray] = []
    for pid, geom in zip(polys["poly_id"].to_numpy(), polys.geometry, strict=True):
        x0, y0, x1, y1 = geom.bounds
        c0, r0 = inv * (x0, y1)
        c1, r1 = inv * (x1, y0)
        grid_c, grid_r = np.meshgrid(np.arange(max(int(np.floor(c0)), 0), min(int(np.ceil(c1)), shape[1])),
                                     np.arange(max(int(np.floor(r0)), 0), min(int(np.ceil(r1)), shape[0])))
        cc, rr = grid_c.ravel(), grid_r.ravel()
        xs, ys = transform * (cc + 0.5, rr + 0.5)
        inside = shapely.contains_xy(geom, xs, ys) if len(cc) else np.zeros(0, bool)
        cc, rr = cc[inside], rr[inside]
        if len(cc) == 0:
            p = geom.representative_point()
            c, r = inv * (p.x, p.y)
            if not (0 <= r < shape[0] and 0 <= c < shape[1]):
                continue
            cc, rr = np.array([int(c)]), np.array([int(r)])
        pick = rng(seed, "siamese-points", int(pid)).permutation(len(cc))[:k]
        rows.append(np.column_stack([np.full(len(pick), pid), rr[pick], cc[pick]]))
    return np.concatenate(rows).astype(np.int64) if rows else np.empty((0, 3), np.int64)


def cell_grid(grid: GridSpec, cell_m: float) -> GridSpec:
    """A grid over ``grid``'s extent whose pixels are ``cell_m`` (rounded to a whole number of its pixels; the grid
    itself when its pixels are that size or larger)."""
    from chain.grid import GridSpec

    a, b, c, d, e, f = grid.transform
    k = int(round(cell_m / abs(a)))
    if k <= 1:
        return grid
    return GridSpec(grid.crs_wkt, (a * k, b, c, d, e * k, f), -(-grid.width // k), -(-grid.height // k))


def extract(cat: Catalog, spec: FeatureSpec, tiles: list[Tile], points: np.ndarray, patch: int,
            desc: str, path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The summary patches (n, S, patch, patch) around ``points`` (poly_id, row, col) of ``cat``'s grid, and which are
    usable (every value finite); each tile that holds a point is read once (with a halo; edges replicated off the
    grid). With ``path``, the patches are written to that .npy file as they come and returned memory-mapped (a
    large reference does not have to fit in memory)."""
    from rasterio.windows import Window

    from chain.features import compute_features
    from chain.log import Progress

    half = patch // 2
    H, W = cat.grid.height, cat.grid.width
    n_ch = len(summary_names(spec))
    shape = (len(points), n_ch, patch, patch)
    out = np.full(shape, np.nan, np.float32) if path is None else np.lib.format.open_memmap(path, "w+", np.float32, shape)
    usable = np.zeros(len(points), bool)
    todo = [t for t in tiles if _in_tile(points, t).any()]
    with Progress(len(todo), desc, log) as bar:
        for t in todo:
            sel = np.flatnonzero(_in_tile(points, t))
            w = t.window
            r0, c0 = max(int(w.row_off) - half, 0), max(int(w.col_off) - half, 0)
            r1, c1 = min(int(w.row_off + w.height) + half, H), min(int(w.col_off + w.width) + half, W)
            block = compute_features(cat, spec, Window(c0, r0, c1 - c0, r1 - r0))
            vals = np.where(block.mappable()[None], block.values, np.nan)
            s = summaries(vals, spec)
            pad = ((0, 0), (half, half), (half, half))
            s = np.pad(s, pad, mode="edge")
            for i in sel:
                r, c = points[i, 1] - r0 + half, points[i, 2] - c0 + half
                out[i] = s[:, r - half:r + half + 1, c - half:c + half + 1]
                usable[i] = bool(np.isfinite(out[i]).all())
            bar.update()
    if isinstance(out, np.memmap):
        out.flush()
    return out, usable


def _in_tile(points: np.ndarray, t: Tile) -> np.ndarray:
    w = t.window
    return ((points[:, 1] >= w.row_off) & (points[:, 1] < w.row_off + w.height)
            & (points[:, 2] >= w.col_off) & (points[:, 2] < w.col_off + w.width))


def encoder(channels: int, width: int, descriptor: int) -> torch.nn.Module:
    from torch import nn

    class Encoder(nn.Module):
        """Two 3x3 conv blocks, global average pooling, a linear projection, L2 normalisation."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.proj = nn.Linear(width, descriptor)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.proj(self.body(x)), dim=1)

    return Encoder()


@dataclass
class Matching:
    """What the detector gives: per polygon its score and fold, and the training and retrieval figures."""

    scores: dict[int, float]  # poly_id -> mean cosine similarity of its pixels across the years
    fold: dict[int, int]  # poly_id -> the fold it was scored in (by an encoder that never saw it)
    map_at_5: float  # mean over the folds' polygons
    chance_at_5: float
    history: list[list[dict[str, float]]]  # per fold, per epoch
    seconds: float
    networks: list[Any]
    norm: tuple[np.ndarray, np.ndarray]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One of the 8 rotations / flips of the patches (land cover has no orientation)."""
    import torch

    k = int(torch.randint(0, 4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if bool(torch.randint(0, 2, (1,), generator=gen)) else x


class Pairs:
    """The rows ``rows`` of both years' patch arrays (in memory or memory-mapped), normalised per channel on demand:
    only a batch is ever converted."""

    def __init__(self, before: np.ndarray, after: np.ndarray, rows: np.ndarray, chunk: int = 4096):
        self.before, self.after, self.rows = before, after, rows
        total = np.zeros(before.shape[1]), np.zeros(before.shape[1])
        n = 0
        for s in range(0, len(rows), chunk):  # mean and variance per channel, accumulated in float64 by chunks
            for arr in (before, after):
                x = arr[rows[s:s + chunk]].astype(np.float64)
                total[0][:] += x.sum(axis=(0, 2, 3))
                total[1][:] += (x * x).sum(axis=(0, 2, 3))
                n += x.shape[0] * x.shape[2] * x.shape[3]
        mean = total[0] / max(n, 1)
        self.mean = mean.astype(np.float32)
        self.std = (np.sqrt(np.maximum(total[1] / max(n, 1) - mean * mean, 0)) + 1e-6).astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, year: int, idx: np.ndarray) -> torch.Tensor:
        import torch

        x = (self.before if year == 0 else self.after)[self.rows[idx]]
        return torch.as_tensor((x - self.mean[None, :, None, None]) / self.std[None, :, None, None])

    def descriptors(self, net: Any, idx: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            return tuple(np.concatenate([net(self.get(y, idx[s:s + chunk])).numpy() for s in range(0, len(idx), chunk)])  # type: ignore[return-value]
                         for y in (0, 1))


def train_and_score(pairs: Pairs, poly: np.ndarray, cfg: SiameseConfig, seed: int) -> Matching:
    """Score every polygon from the patch pairs of its pixels (``poly``: poly_id per pair) with an encoder trained,
    self-supervised, on the polygons of the other ``cfg.folds`` folds (cross-fitting)."""
    from chain.seeds import rng

    t0 = time.time()
    ids = np.unique(poly)
    if len(ids) < 2 * cfg.folds:
        raise StepError(f"carryover: {len(ids)} reference polygon(s) with usable pixels in both years; the change detector "
                        f"needs at least {2 * cfg.folds} (update.siamese.folds = {cfg.folds}; are the two years' images over "
                        "the same area?)")
    order = rng(seed, "siamese-folds").permutation(ids)
    fold_of = {int(p): i % cfg.folds for i, p in enumerate(order)}
    fold = np.vectorize(fold_of.get)(poly)
    scores: dict[int, float] = {}
    histories, nets, maps, chances, weights = [], [], [], [], []
    for f in range(cfg.folds):
        net, history = _fit(pairs, poly, np.flatnonzero(fold != f), cfg, seed, f)
        test = np.flatnonzero(fold == f)
        da, db = pairs.descriptors(net, test)
        sim = (da * db).sum(1)
        for p in np.unique(poly[test]):
            scores[int(p)] = float(sim[poly[test] == p].mean())
        m5, chance = retrieval(da, db, poly[test], np.unique(poly[test]))
        maps.append(m5)
        chances.append(chance)
        weights.append(len(np.unique(poly[test])))
        histories.append(history)
        nets.append(net)
    w = np.asarray(weights, float)
    m5, chance = float(np.average(maps, weights=w)), float(np.average(chances, weights=w))
    log.info("carryover: %d siamese encoders (one per fold) trained on %d pixel pairs of %d polygons in %.1f s (loss %.3f -> "
             "%.3f); mAP@5 over the folds' held-out polygons %.3f (chance %.3f)", cfg.folds, len(poly), len(ids),
             time.time() - t0, histories[0][0]["loss"], histories[0][-1]["loss"], m5, chance)
    return Matching(scores, fold_of, m5, chance, histories, time.time() - t0, nets, (pairs.mean, pairs.std))


def _fit(pairs: Pairs, poly: np.ndarray, train: np.ndarray, cfg: SiameseConfig, seed: int,
         fold: int) -> tuple[Any, list[dict[str, float]]]:
    """One encoder on the pairs ``train``: symmetric InfoNCE, the other places of the batch as negatives; an epoch
    sees at most ``cfg.max_pairs`` of them (a random draw each epoch)."""
    import torch
    from torch import nn

    from chain.seeds import derive_seed

    torch.manual_seed(derive_seed(seed, "siamese", fold))
    gen = torch.Generator().manual_seed(derive_seed(seed, "siamese-batches", fold))
    net = encoder(pairs.before.shape[1], cfg.width, cfg.descriptor)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    tr_poly = torch.as_tensor(poly[train])
    history = []
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(train), generator=gen)[:cfg.max_pairs]
        total, seen = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            b = order[s:s + cfg.batch_size]
            if len(b) < 2:
                continue
            idx = train[b.numpy()]
            za, zb = net(_augment(pairs.get(0, idx), gen)), net(_augment(pairs.get(1, idx), gen))
            logits = za @ zb.T / cfg.temperature
            p = tr_poly[b]
            same = (p[:, None] == p[None, :]) & ~torch.eye(len(b), dtype=torch.bool)
            logits = logits.masked_fill(same, float("-inf"))  # another pixel of the same polygon is no negative
            target = torch.arange(len(b))
            loss = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, seen = total + float(loss.detach()) * len(b), seen + len(b)
        history.append({"epoch": epoch + 1, "loss": total / max(seen, 1)})
    net.eval()
    return net, history


def retrieval(da: np.ndarray, db: np.ndarray, poly: np.ndarray, held: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Mean average precision at ``k`` of finding each held-out polygon's own place among this year's held-out
    polygons from its last year's descriptor (one relevant candidate: AP = 1 / rank when rank <= k), and chance."""
    def per_polygon(d: np.ndarray) -> np.ndarray:
        m = np.stack([d[poly == p].mean(0) for p in held])
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    q, c = per_polygon(da), per_polygon(db)
    sim = q @ c.T
    rank = 1 + (sim > np.diag(sim)[:, None]).sum(1)
    ap = np.where(rank <= k, 1.0 / rank, 0.0)
    n = len(held)
    chance = float(sum(1.0 / r for r in range(1, min(k, n) + 1)) / n)
    return float(ap.mean()), chance


AUTO_MADS = 2.5  # chosen on the two-year demo between 2 (more recall) and 3 (more precision): docs/update.md


def auto_threshold(scores: np.ndarray) -> float:
    """More than AUTO_MADS robust standard deviations (1.4826 x the median absolute deviation) below the median score:
    an outlier among mostly unchanged polygons. A missed change puts a wrong label into training, a false alarm only
    costs a review and one polygon less: the rule leans towards recall."""
    med = float(np.median(scores))
    mad = float(np.median(np.abs(scores - med)))
    return med - AUTO_MADS * 1.4826 * max(mad, 1e-3)
