"""Fast, exact evaluation of a fitted scikit-learn Random Forest (numba, parallel over pixel blocks).

The trees are flattened once into 8-byte nodes (threshold, feature, left child; the right child is
left + 1), breadth-first; prediction walks a block of pixels through one tree at a time, level by
level, so the block's independent memory loads overlap (scikit-learn walks one pixel at a time and
pays per-tree Python and memory overheads). Pixels come pixel-major (n, features) or feature-major
(features, n), walked in place (never copied). Results equal scikit-learn's
``predict_proba``:
- a float32 feature x satisfies ``x <= t`` (t float64, as scikit-learn compares) exactly when
  ``x <= t32``, t32 the largest float32 not above t: thresholds are stored as such float32;
- a leaf's left child is itself and its threshold +inf (x > inf is false, NaN too), so a pixel at
  its leaf stays there while the block walks on;
- leaf distributions are normalised per tree in float64, summed over trees in order, then divided by
  the number of trees, as scikit-learn does (sums may differ in the last bit; classes do not);
- a pure leaf (one class: a fully grown tree's leaves all are) adds 1.0 to its class's sum alone: the other
  classes' terms are +0.0, which leaves a sum (>= +0.0) unchanged, so the sums are the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from chain import scratch

try:
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is a dependency; classify falls back to scikit-learn
    numba = None  # type: ignore[assignment]

BLOCK = 256  # pixels walked together through one tree
LANES = 8  # a mixed leaf's distribution added 8 classes at a time: rows padded to a multiple of 8 (one 64-byte line), a
# constant inner loop the compiler unrolls and vectorises (every leaf so, before pure leaves added 1.0 alone: a 512²
# tile, 100 trees, 7 classes, 0.76 against 0.89 s)
COMPACT_EVERY = 2  # levels walked between two compactions of the pixels still going


NARROW = np.dtype([("threshold", "<f4"), ("feature", "<u2"), ("left", "<u2")])  # 8 bytes a node
WIDE = np.dtype([("threshold", "<f4"), ("feature", "<u4"), ("left", "<u4")])  # trees of 65,536 nodes or more


@dataclass
class CompiledForest:
    nodes: np.ndarray  # NARROW or WIDE records; each tree breadth-first, a node's children side by side
    value: np.ndarray  # float64 (n_nodes, n_classes): normalised class distribution (used at leaves)
    roots: np.ndarray  # int32 (n_trees): index of each tree's first node; ``left`` counts from there
    depth: np.ndarray  # int32 (n_trees): levels to walk
    first: np.ndarray  # int32 (n_trees): levels walked by every pixel before the walkers still going are compacted
    classes: np.ndarray

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @property
    def threshold(self) -> np.ndarray:
        return self.nodes["threshold"]

    @cached_property
    def pure(self) -> np.ndarray:
        """int16 (n_nodes): the class column of a pure leaf (its distribution is 1.0 there, 0.0 elsewhere), else -1:
        the kernels add 1.0 to that column alone and read ``lanes`` only for impure leaves, so the class sums do not
        walk ``value`` (64 bytes a node once padded: five forests' 3.5 MB would crowd the core's cache)."""
        one = self.value == 1.0
        pure = (self.nodes["threshold"] == np.inf) & one.any(axis=1) & ((self.value == 0.0) | one).all(axis=1)
        return np.where(pure, one.argmax(axis=1), -1).astype(np.int16)

    @cached_property
    def lanes(self) -> np.ndarray:
        """``value`` with zero columns up to a multiple of ``LANES`` (what the kernels sum; the zeros add nothing); a
        stack's values are already so (``stack`` pads them): used as they are, not copied again."""
        v = self.value
        if v.shape[1] % LANES == 0 and v.dtype == np.float64 and v.flags.c_contiguous:
            return v
        return padded(v, v.shape[1])


def padded(value: np.ndarray, k: int) -> np.ndarray:
    """``value`` (n, <= k) in a C-contiguous float64 array of -(-k // LANES) * LANES zero-filled columns."""
    out = np.zeros((len(value), -(-k // LANES) * LANES), np.float64)
    out[:, :value.shape[1]] = value
    return out


def save(forest: CompiledForest, path: Path, source: str) -> None:
    """Write ``forest`` (compiled from the model file described by ``source``) atomically as .npz."""
    from chain.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, source=np.array(source), **{f.name: getattr(forest, f.name) for f in fields(forest)})


def load(path: Path) -> CompiledForest:
    with np.load(path, allow_pickle=False) as z:
        return CompiledForest(**{f.name: z[f.name] for f in fields(CompiledForest)})


def _stamp(model_file: Path) -> str:
    st = model_file.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def compiled_file(model_folder: Path, write: bool = True) -> Path | None:
    """``forest.npz`` of ``model_folder``: ``model.joblib`` compiled, when it was compiled from that very file.

    With ``write``, a missing or stale one is compiled again (None when the model is not a forest this
    module evaluates); without, None. Classify workers load that file and never import scikit-learn
    (~1 s per worker at start).
    """
    model_file, path = model_folder / "model.joblib", model_folder / "forest.npz"
    source = _stamp(model_file)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["source"]) == source:
                    return path
        except (OSError, ValueError, KeyError):  # damaged: compile again
            pass
    return compile_file(model_folder) if write else None


def compile_file(model_folder: Path, model: Any = None) -> Path | None:
    """Compile ``model.joblib`` of ``model_folder`` (``model``: that file's estimator, when already loaded) into
    ``forest.npz`` beside it; None when it is not a forest this module evaluates."""
    model_file, path = model_folder / "model.joblib", model_folder / "forest.npz"
    if model is None:
        import joblib

        model = joblib.load(model_file)
    if not (available() and supports(model)):
        return None
    save(compile_forest(model), path, _stamp(model_file))
    return path


def available() -> bool:
    return numba is not None


def supports(model: Any) -> bool:
    from sklearn.ensemble import RandomForestClassifier

    return isinstance(model, RandomForestClassifier) and getattr(model, "n_outputs_", 1) == 1


def breadth_first(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Old node ids in breadth-first order, each internal node's two children next to each other."""
    order, frontier = [np.array([0])], np.array([0])
    while frontier.size:
        inner = frontier[left[frontier] != -1]
        frontier = np.column_stack([left[inner], right[inner]]).ravel()
        order.append(frontier)
    return np.concatenate(order)


def compile_forest(model: Any) -> CompiledForest:
    trees = [est.tree_ for est in model.estimators_]
    narrow = max(t.node_count for t in trees) < 2**16 and model.n_features_in_ < 2**16
    nodes, vals, roots, depth, first = [], [], [], [], []
    offset = 0
    for tree in trees:
        order = breadth_first(tree.children_left, tree.children_right)
        new_id = np.empty(len(order), dtype=np.int64)
        new_id[order] = np.arange(len(order))
        leaf = tree.children_left[order] == -1
        rec = np.zeros(len(order), dtype=NARROW if narrow else WIDE)
        t64 = tree.threshold[order]
        t32 = t64.astype(np.float32)
        over = t32.astype(np.float64) > t64
        t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
        t32[leaf] = np.inf  # x > inf is false (NaN too): a leaf's walkers take "left", the leaf itself
        rec["threshold"] = t32
        rec["feature"] = np.where(leaf, 0, tree.feature[order])
        rec["left"] = np.where(leaf, np.arange(len(order)), new_id[np.maximum(tree.children_left[order], 0)])
        v = tree.value[order, 0, :].astype(np.float64)
        norm = v.sum(axis=1, keepdims=True)
        norm[norm == 0.0] = 1.0
        nodes.append(rec)
        vals.append(v / norm)
        roots.append(offset)
        depth.append(tree.max_depth)
        first.append(min(tree.max_depth, _leaf_depth_quantile(tree, 0.4)))
        offset += len(order)
    return CompiledForest(
        nodes=np.concatenate(nodes),
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

    @njit(cache=True, nogil=True)
    def _walk_block(xt, nodes, value, pure, roots, depth, first, out):  # type: ignore[no-untyped-def]
        # xt[feature, pixel]: a view of the block in the caller's own layout, never copied (feature-major
        # X[:, s:s + m], or pixel-major X[s:s + m].T); the first levels' nodes are few, so with feature-major
        # input neighbouring pixels read neighbouring floats (five stacked forests on a bench tile, 455
        # features: 2.52 s against 2.81 with each block copied pixel-major first, min of 7). Each tree is walked
        # level by level (independent loads overlap): all pixels for the tree's first levels, then only
        # the pixels not yet at a leaf, compacted every COMPACT_EVERY levels (leaves are ~12 levels deep
        # on average in a depth-25 forest: walking every pixel to the full depth wastes ~40 % of steps).
        # A node is 8 bytes and its children are adjacent: a 100-tree forest stays in the core's L2
        # cache beside the block, which 16-byte nodes did not (1.4x faster)
        m = xt.shape[1]
        K = value.shape[1]
        cur = np.empty(m, np.int64)
        active = np.empty(m, np.int64)
        for t in range(roots.shape[0]):
            tree = nodes[roots[t]:]
            cur[:] = 0
            for _ in range(first[t]):
                for j in range(m):
                    node = tree[cur[j]]
                    cur[j] = node.left + (xt[node.feature, j] > node.threshold)
            na = 0
            for j in range(m):
                active[na] = j
                na += tree[cur[j]].threshold != np.inf  # branch-free compaction: keep j when not at a leaf
            level = first[t]
            while na > 0 and level < depth[t]:
                for _ in range(COMPACT_EVERY):
                    for i in range(na):
                        j = active[i]
                        node = tree[cur[j]]
                        cur[j] = node.left + (xt[node.feature, j] > node.threshold)
                level += COMPACT_EVERY
                kept = 0
                for i in range(na):
                    j = active[i]
                    active[kept] = j
                    kept += tree[cur[j]].threshold != np.inf
                na = kept
            leaves, classes = value[roots[t]:], pure[roots[t]:]
            for j in range(m):
                leaf = cur[j]
                c = classes[leaf]
                if c >= 0:  # a pure leaf: 1.0 to its class, +0.0 (no change) to the others
                    out[j, c] += 1.0
                else:
                    for k0 in range(0, K, LANES):  # K is a multiple of LANES: a constant inner loop, vectorised
                        for k in range(LANES):
                            out[j, k0 + k] += leaves[leaf, k0 + k]

    @njit(cache=True, nogil=True)
    def _block(X, pixels, s, m):  # type: ignore[no-untyped-def]
        """Pixels s..s+m as the kernel reads them, [feature, pixel], a view in X's own layout (never a copy):
        ``X[s:s + m].T`` of pixel-major X (n, F), ``X[:, s:s + m]`` of feature-major X (F, n)."""
        return X[s:s + m].T if pixels else X[:, s:s + m]

    # the driver twice: parallel over blocks (one caller at a time, e.g. compare_models), and serial for
    # classify tiles, where dask already runs one tile per core: numba's default "workqueue" threading
    # layer must not be entered by two threads at once, and serial code never enters it

    @njit(parallel=True, cache=True, nogil=True)
    def _proba_sum_parallel(X, pixels, nodes, value, pure, roots, depth, first, out):  # type: ignore[no-untyped-def]
        n = out.shape[0]
        for b in prange((n + BLOCK - 1) // BLOCK):
            s = b * BLOCK
            m = min(n, s + BLOCK) - s
            _walk_block(_block(X, pixels, s, m), nodes, value, pure, roots, depth, first, out[s:s + m])

    @njit(cache=True, nogil=True)
    def _proba_sum_serial(X, pixels, nodes, value, pure, roots, depth, first, out):  # type: ignore[no-untyped-def]
        n = out.shape[0]
        for s in range(0, n, BLOCK):
            m = min(n, s + BLOCK) - s
            _walk_block(_block(X, pixels, s, m), nodes, value, pure, roots, depth, first, out[s:s + m])

    @njit(cache=True, nogil=True)
    def _proba_sum_stacked(X, pixels, nodes, value, pure, roots, depth, first, bounds, out):  # type: ignore[no-untyped-def]
        # several forests over the same pixels (classify's runs): each block is walked by every forest while it
        # is in the cache, instead of once per forest from the whole tile in memory
        n = out.shape[1]
        for s in range(0, n, BLOCK):
            m = min(n, s + BLOCK) - s
            for f in range(bounds.shape[0] - 1):
                a, b = bounds[f], bounds[f + 1]
                _walk_block(_block(X, pixels, s, m), nodes, value, pure, roots[a:b], depth[a:b], first[a:b], out[f, s:s + m])


def _run(forest: CompiledForest, X: np.ndarray, pixels: bool, threads: int | None) -> np.ndarray:
    """``threads``: 1 runs serially (the caller runs several at once); None or more use numba's threads."""
    if numba is None:  # pragma: no cover
        raise RuntimeError("numba is not installed")
    lanes = forest.lanes
    out = scratch.zeros((X.shape[0] if pixels else X.shape[1], lanes.shape[1]), np.float64)
    kernel = _proba_sum_serial if threads == 1 else _proba_sum_parallel
    if threads and threads > 1:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    kernel(X, pixels, forest.nodes, lanes, forest.pure, forest.roots, forest.depth, forest.first, out)
    return out[:, :forest.value.shape[1]] / forest.n_trees


def predict_proba_features_major(forest: CompiledForest, Xf: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Class probabilities (n, K) for float32 features ``Xf`` of shape (n_features, n).

    NaN features (nodata pixels) are harmless: comparisons with NaN are false; mask such pixels after.
    """
    X = np.ascontiguousarray(Xf, dtype=np.float32)
    return _run(forest, X, False, threads)


def predict_proba(forest: CompiledForest, X: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Class probabilities (n, K) for float32 features ``X`` of shape (n, n_features)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    return _run(forest, X, True, threads)


@dataclass
class ForestStack:
    """Several compiled forests as one node array (``forest``; its ``value`` padded to the most classes), walked
    together by ``predict_proba_stacked``; ``bounds[i]:bounds[i + 1]`` are forest i's trees."""

    forest: CompiledForest
    bounds: np.ndarray  # int64 (n_forests + 1)
    n_classes: tuple[int, ...]

    @property
    def n_trees(self) -> np.ndarray:
        return np.diff(self.bounds)


def stack(forests: list[CompiledForest]) -> ForestStack:
    """One ``ForestStack`` of ``forests`` (their nodes widened when one of them needs it; ``left`` counts from each
    tree's root and the roots are int64, so the stack's size never does)."""
    wide = any(f.nodes.dtype == WIDE for f in forests)
    k_max = max(f.value.shape[1] for f in forests)
    nodes, values, roots, offset = [], [], [], 0
    for f in forests:
        nodes.append(f.nodes.astype(WIDE) if wide else f.nodes)
        values.append(padded(f.value, k_max))
        roots.append(f.roots.astype(np.int64) + offset)
        offset += len(f.nodes)
    merged = CompiledForest(
        nodes=np.concatenate(nodes), value=np.ascontiguousarray(np.concatenate(values)),
        roots=np.concatenate(roots), depth=np.concatenate([f.depth for f in forests]),
        first=np.concatenate([f.first for f in forests]), classes=np.arange(k_max))
    bounds = np.r_[0, np.cumsum([f.n_trees for f in forests])].astype(np.int64)
    return ForestStack(merged, bounds, tuple(int(f.value.shape[1]) for f in forests))


def predict_proba_stacked(stacked: ForestStack, X: np.ndarray, pixel_major: bool) -> list[np.ndarray]:
    """Every stacked forest's class probabilities (n, K_i) for float32 features ``X`` ((n, F) when ``pixel_major``,
    else (F, n)), walked serially (one dask thread per tile). Each equals that forest's ``predict_proba`` bit for
    bit: the same walk, the same sums in the same order."""
    if numba is None:  # pragma: no cover
        raise RuntimeError("numba is not installed")
    X = np.ascontiguousarray(X, dtype=np.float32)
    f = stacked.forest
    out = scratch.zeros((len(stacked.n_classes), X.shape[0] if pixel_major else X.shape[1], f.lanes.shape[1]), np.float64)
    _proba_sum_stacked(X, pixel_major, f.nodes, f.lanes, f.pure, f.roots, f.depth, f.first, stacked.bounds, out)
    return [out[i, :, :k] / n for i, (k, n) in enumerate(zip(stacked.n_classes, stacked.n_trees, strict=True))]


def evaluator(model: Any, threads: int | None = None, compiled: bool = True) -> Any:
    """``model`` as classification should evaluate it: compiled when it can be, else with ``threads`` jobs."""
    if compiled and available() and supports(model):
        return FastForest(model, threads)
    if threads and hasattr(model, "n_jobs"):
        model.n_jobs = threads  # parallelism comes from the dask workers: do not oversubscribe cores
    return model


class FastForest:
    """Wraps a fitted RandomForestClassifier (or its ``CompiledForest``): same ``classes_`` and
    ``predict_proba``, compiled."""

    def __init__(self, model: Any, threads: int | None = None):
        self.forest = model if isinstance(model, CompiledForest) else compile_forest(model)
        self.classes_ = self.forest.classes
        self.threads = threads

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return predict_proba(self.forest, X, self.threads)

    def predict_proba_features_major(self, Xf: np.ndarray) -> np.ndarray:
        return predict_proba_features_major(self.forest, Xf, self.threads)
