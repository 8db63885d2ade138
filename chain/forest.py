"""Fast, exact evaluation of a fitted scikit-learn Random Forest (numba, parallel over pixel blocks).

The trees are flattened once into arrays; prediction walks a block of pixels through one tree at a
time, level by level, so the block's independent memory loads overlap (scikit-learn walks one pixel
at a time and pays per-tree Python and memory overheads). Results equal scikit-learn's
``predict_proba``:
- a float32 feature x satisfies ``x <= t`` (t float64, as scikit-learn compares) exactly when
  ``x <= t32``, t32 the largest float32 not above t: thresholds are stored as such float32;
- leaves point to themselves (threshold +inf), so a pixel at its leaf stays there while the block walks on;
- leaf distributions are normalised per tree in float64, summed over trees in order, then divided by
  the number of trees, as scikit-learn does (sums may differ in the last bit; classes do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is a dependency; classify falls back to scikit-learn
    numba = None

BLOCK = 256  # pixels walked together through one tree
COMPACT_EVERY = 2  # levels walked between two compactions of the pixels still going


@dataclass
class CompiledForest:
    child: np.ndarray  # int32 (2 * n_nodes): [left, right] of each node, global indices; a leaf points to itself
    feature: np.ndarray  # int32 (n_nodes)
    threshold: np.ndarray  # float32 (n_nodes), rounded down; +inf at leaves
    value: np.ndarray  # float64 (n_nodes, n_classes): normalised class distribution (used at leaves)
    roots: np.ndarray  # int32 (n_trees)
    depth: np.ndarray  # int32 (n_trees): levels to walk
    first: np.ndarray  # int32 (n_trees): levels walked by every pixel before the walkers still going are compacted
    classes: np.ndarray

    @property
    def n_trees(self) -> int:
        return len(self.roots)


def available() -> bool:
    return numba is not None


def supports(model: Any) -> bool:
    from sklearn.ensemble import RandomForestClassifier

    return isinstance(model, RandomForestClassifier) and getattr(model, "n_outputs_", 1) == 1


def compile_forest(model: Any) -> CompiledForest:
    child, feats, thrs, vals, roots, depth, first = [], [], [], [], [], [], []
    offset = 0
    for est in model.estimators_:
        tree = est.tree_
        n = tree.node_count
        idx = np.arange(n)
        leaf = tree.children_left == -1
        pair = np.empty(2 * n, dtype=np.int64)
        pair[0::2] = np.where(leaf, idx, tree.children_left) + offset
        pair[1::2] = np.where(leaf, idx, tree.children_right) + offset
        t32 = tree.threshold.astype(np.float32)
        over = t32.astype(np.float64) > tree.threshold
        t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
        t32[leaf] = np.inf
        v = tree.value[:, 0, :].astype(np.float64)
        norm = v.sum(axis=1, keepdims=True)
        norm[norm == 0.0] = 1.0
        child.append(pair)
        feats.append(np.where(leaf, 0, tree.feature))
        thrs.append(t32)
        vals.append(v / norm)
        roots.append(offset)
        depth.append(tree.max_depth)
        first.append(min(tree.max_depth, _leaf_depth_quantile(tree, 0.4)))
        offset += n
    return CompiledForest(
        child=np.concatenate(child).astype(np.int32),
        feature=np.concatenate(feats).astype(np.int32),
        threshold=np.concatenate(thrs),
        value=np.ascontiguousarray(np.concatenate(vals)),
        roots=np.asarray(roots, dtype=np.int32),
        depth=np.asarray(depth, dtype=np.int32),
        first=np.asarray(first, dtype=np.int32),
        classes=np.asarray(model.classes_),
    )


def _leaf_depth_quantile(tree: Any, q: float) -> int:
    """The depth by which a share ``q`` of the training samples has reached its leaf."""
    left, right = tree.children_left, tree.children_right
    depth = np.zeros(tree.node_count, dtype=np.int64)
    for i in range(tree.node_count):  # children always come after their parent in scikit-learn's arrays
        if left[i] != -1:
            depth[left[i]] = depth[right[i]] = depth[i] + 1
    leaf = left == -1
    d, w = depth[leaf], tree.weighted_n_node_samples[leaf]
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    return int(d[order][min(np.searchsorted(cum, q), len(order) - 1)])


if numba is not None:

    @njit(parallel=True, cache=True, nogil=True)
    def _proba_sum(X, child, feature, threshold, value, roots, depth, first, out):  # type: ignore[no-untyped-def]
        # X is feature-major (n_features, n), the layout the rasters come in; each block is copied
        # pixel-major once (a pixel's walk then touches one small row) and walked through every tree:
        # level by level (independent loads overlap), all pixels for the tree's first levels, then only
        # the pixels not yet at a leaf, compacted every COMPACT_EVERY levels (leaves are ~12 levels deep
        # on average in a depth-25 forest: walking every pixel to the full depth wastes ~40 % of steps)
        n = X.shape[1]
        F = X.shape[0]
        K = value.shape[1]
        n_blocks = (n + BLOCK - 1) // BLOCK
        for b in prange(n_blocks):
            s = b * BLOCK
            m = min(n, s + BLOCK) - s
            xb = np.empty((m, F), np.float32)
            for f in range(F):
                for j in range(m):
                    xb[j, f] = X[f, s + j]
            cur = np.empty(m, np.int32)
            active = np.empty(m, np.int32)
            for t in range(roots.shape[0]):
                cur[:] = roots[t]
                for _ in range(first[t]):
                    for j in range(m):
                        nd = cur[j]
                        cur[j] = child[2 * nd + (xb[j, feature[nd]] > threshold[nd])]
                na = 0
                for j in range(m):
                    active[na] = j
                    na += threshold[cur[j]] != np.inf  # branch-free compaction: keep j when not at a leaf
                level = first[t]
                while na > 0 and level < depth[t]:
                    for _ in range(COMPACT_EVERY):
                        for i in range(na):
                            j = active[i]
                            nd = cur[j]
                            cur[j] = child[2 * nd + (xb[j, feature[nd]] > threshold[nd])]
                    level += COMPACT_EVERY
                    kept = 0
                    for i in range(na):
                        j = active[i]
                        active[kept] = j
                        kept += threshold[cur[j]] != np.inf
                    na = kept
                for j in range(m):
                    for k in range(K):
                        out[s + j, k] += value[cur[j], k]


def predict_proba_features_major(forest: CompiledForest, Xf: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Class probabilities (n, K) for float32 features ``Xf`` of shape (n_features, n).

    NaN features (nodata pixels) are harmless: comparisons with NaN are false; mask such pixels after.
    """
    if numba is None:  # pragma: no cover
        raise RuntimeError("numba is not installed")
    X = np.ascontiguousarray(Xf, dtype=np.float32)
    out = np.zeros((X.shape[1], forest.value.shape[1]), dtype=np.float64)
    if threads:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    _proba_sum(X, forest.child, forest.feature, forest.threshold, forest.value, forest.roots, forest.depth, forest.first, out)
    out /= forest.n_trees
    return out


def predict_proba(forest: CompiledForest, X: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Class probabilities (n, K) for float32 features ``X`` of shape (n, n_features)."""
    return predict_proba_features_major(forest, np.asarray(X, dtype=np.float32).T, threads)


def evaluator(model: Any, threads: int | None = None, compiled: bool = True) -> Any:
    """``model`` as classification should evaluate it: compiled when it can be, else with ``threads`` jobs."""
    if compiled and available() and supports(model):
        return FastForest(model, threads)
    if threads and hasattr(model, "n_jobs"):
        model.n_jobs = threads  # parallelism comes from the dask workers: do not oversubscribe cores
    return model


class FastForest:
    """Wraps a fitted RandomForestClassifier: same ``classes_`` and ``predict_proba``, compiled."""

    def __init__(self, model: Any, threads: int | None = None):
        self.forest = compile_forest(model)
        self.classes_ = self.forest.classes
        self.threads = threads

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return predict_proba(self.forest, X, self.threads)

    def predict_proba_features_major(self, Xf: np.ndarray) -> np.ndarray:
        return predict_proba_features_major(self.forest, Xf, self.threads)
