"""The compiled forest gives scikit-learn's predictions."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from chain import forest


@pytest.mark.parametrize("depth,weight", [(25, None), (3, "balanced"), (None, None)])
def test_same_classes_and_probabilities_as_scikit_learn(depth, weight):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 40)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1] * X[:, 2], [-1, 0, 1]) * 2 + 3  # classes 3, 5, 7, 9
    model = RandomForestClassifier(30, max_depth=depth, min_samples_split=5, class_weight=weight,
                                   random_state=0, n_jobs=1).fit(X, y)
    Xp = rng.normal(size=(20000, 40)).astype(np.float32)
    # values exactly on thresholds are where rounding would show
    Xp[:500, model.estimators_[0].tree_.feature[0]] = model.estimators_[0].tree_.threshold[0]
    expected = model.predict_proba(Xp)
    got = forest.FastForest(model, threads=2).predict_proba(Xp)
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert (forest.FastForest(model).classes_ == model.classes_).all()


def test_thresholds_are_the_largest_float32_not_above_scikit_learns():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2000, 10)).astype(np.float32)
    model = RandomForestClassifier(5, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    f = forest.compile_forest(model)
    # nodes are stored breadth-first
    t64 = np.concatenate([e.tree_.threshold[forest.breadth_first(e.tree_.children_left, e.tree_.children_right)]
                          for e in model.estimators_])
    internal = np.isfinite(f.threshold)
    t32 = f.threshold[internal]
    assert (t32.astype(np.float64) <= t64[internal]).all()
    assert (np.nextafter(t32, np.float32(np.inf)).astype(np.float64) > t64[internal]).all()
    assert (~internal).sum() == sum(e.tree_.n_leaves for e in model.estimators_)


def test_breadth_first_order_puts_children_side_by_side():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 5))
    tree = RandomForestClassifier(1, random_state=0).fit(X, X[:, 0] + X[:, 1] > 0).estimators_[0].tree_
    f = forest.compile_forest(RandomForestClassifier(1, random_state=0).fit(X, X[:, 0] + X[:, 1] > 0))
    order = forest.breadth_first(tree.children_left, tree.children_right)
    assert sorted(order) == list(range(tree.node_count))
    new_id = np.argsort(order)
    for new, old in enumerate(order):
        if tree.children_left[old] == -1:
            assert f.nodes["left"][new] == new and np.isinf(f.nodes["threshold"][new])
        else:
            assert f.nodes["left"][new] == new_id[tree.children_left[old]]
            assert new_id[tree.children_right[old]] == f.nodes["left"][new] + 1
            assert f.nodes["feature"][new] == tree.feature[old]


def test_trees_of_more_than_65536_nodes_use_wide_nodes():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60000, 3)).astype(np.float32)
    y = rng.integers(0, 20, len(X))  # noise: fully grown trees of > 65,536 nodes
    model = RandomForestClassifier(2, bootstrap=False, random_state=0, n_jobs=2).fit(X, y)
    assert max(e.tree_.node_count for e in model.estimators_) > 2**16
    f = forest.compile_forest(model)
    assert f.nodes.dtype == forest.WIDE
    Xp = rng.normal(size=(3000, 3)).astype(np.float32)
    np.testing.assert_array_equal(forest.FastForest(model).predict_proba(Xp).argmax(1), model.predict_proba(Xp).argmax(1))


def test_pure_leaves_add_one_to_their_class_and_the_sums_keep_every_bit():
    # fully grown trees (pure leaves) beside depth-limited ones (mixed leaves): the kernels add 1.0 for a pure
    # leaf and the whole distribution for a mixed one; the sums must be those of every leaf's whole distribution
    # added tree after tree, as scikit-learn's predict_proba adds them
    rng = np.random.default_rng(8)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.3 * rng.normal(size=len(X)), [-1, 0, 1])
    Xp = rng.normal(size=(2000, 8)).astype(np.float32)
    Xp[::13, 0] = np.nan
    for depth in (None, 4):
        model = RandomForestClassifier(15, max_depth=depth, random_state=0).fit(X, y)
        f = forest.compile_forest(model)
        leaf = np.isinf(f.threshold)
        assert (f.pure[~leaf] == -1).all()
        mixed = (f.pure[leaf] == -1).mean()
        assert (mixed == 0.0) if depth is None else (0.0 < mixed < 1.0)
        expected = np.zeros((len(Xp), len(model.classes_)))
        for est in model.estimators_:  # tree after tree, each leaf's distribution (NaN goes left, as -3e38 does)
            v = est.tree_.value[est.apply(np.nan_to_num(Xp, nan=-3e38)), 0, :]
            expected += v / v.sum(axis=1, keepdims=True)
        got = forest.predict_proba(f, Xp, 1)
        np.testing.assert_array_equal(got, expected / len(model.estimators_))
        np.testing.assert_array_equal(forest.predict_proba_features_major(f, np.ascontiguousarray(Xp.T), 2), got)


def test_serial_and_parallel_kernels_and_both_layouts_agree():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4000, 12)).astype(np.float32)
    model = RandomForestClassifier(10, random_state=0).fit(X, (X[:, 0] + X[:, 3] > 0).astype(int) + 2 * (X[:, 5] > 1))
    f = forest.compile_forest(model)
    Xp = rng.normal(size=(1500, 12)).astype(np.float32)  # not a multiple of the block size
    Xp[::7, 3] = np.nan  # x > t is false for NaN: such pixels go left in every kernel alike
    results = [forest.predict_proba(f, Xp, threads) for threads in (1, 2)]
    results += [forest.predict_proba_features_major(f, np.ascontiguousarray(Xp.T), threads) for threads in (1, 2)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    ok = ~np.isnan(Xp).any(axis=1)
    np.testing.assert_array_equal(results[0][ok].argmax(1), model.predict_proba(Xp[ok]).argmax(1))


def test_stacked_forests_give_each_forests_own_probabilities_bit_for_bit():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(60000, 6)).astype(np.float32)
    y = np.digitize(X[:, 0], [-1, 0, 1])
    forests = [  # different class sets and sizes, one with wide nodes (> 65,536 nodes a tree)
        forest.compile_forest(RandomForestClassifier(7, max_depth=6, random_state=0).fit(X[:3000], y[:3000])),
        forest.compile_forest(RandomForestClassifier(2, bootstrap=False, random_state=1, n_jobs=2).fit(X, rng.integers(0, 20, len(X)))),
        forest.compile_forest(RandomForestClassifier(5, random_state=2).fit(X[:2000], (X[:2000, 1] > 0).astype(int) + 5)),
    ]
    assert [f.nodes.dtype for f in forests] == [forest.NARROW, forest.WIDE, forest.NARROW]
    stacked = forest.stack(forests)
    assert stacked.forest.nodes.dtype == forest.WIDE and list(stacked.n_trees) == [7, 2, 5]
    Xp = rng.normal(size=(1000, 6)).astype(np.float32)  # not a multiple of the block size
    Xp[::11, 2] = np.nan
    for pixels, data in ((True, Xp), (False, np.ascontiguousarray(Xp.T))):
        together = forest.predict_proba_stacked(stacked, data, pixels)
        for f, got in zip(forests, together, strict=True):
            assert got.shape == (len(Xp), len(f.classes))
            np.testing.assert_array_equal(got, forest.predict_proba(f, Xp, 1))
    narrow = forest.stack([forests[0], forests[2]])  # no wide forest among them: the nodes stay 8 bytes
    assert narrow.forest.nodes.dtype == forest.NARROW
    np.testing.assert_array_equal(forest.predict_proba_stacked(narrow, Xp, True)[1], forest.predict_proba(forests[2], Xp, 1))


def test_compiled_file_is_written_once_and_follows_the_model(tmp_path):
    import joblib

    rng = np.random.default_rng(6)
    X = rng.normal(size=(800, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    joblib.dump(RandomForestClassifier(5, random_state=0).fit(X, y), tmp_path / "model.joblib")
    path = forest.compiled_file(tmp_path)
    stamp = path.stat().st_mtime_ns
    assert forest.compiled_file(tmp_path) == path and path.stat().st_mtime_ns == stamp  # reused
    loaded = forest.FastForest(forest.load(path))
    np.testing.assert_array_equal(loaded.predict_proba(X), forest.FastForest(joblib.load(tmp_path / "model.joblib")).predict_proba(X))
    other = RandomForestClassifier(7, random_state=1).fit(X, y)
    joblib.dump(other, tmp_path / "model.joblib")  # retrained: the compiled file follows
    assert forest.load(forest.compiled_file(tmp_path)).n_trees == 7
    from sklearn.linear_model import LogisticRegression

    joblib.dump(LogisticRegression().fit(X, y), tmp_path / "model.joblib")
    assert forest.compiled_file(tmp_path) is None  # not a forest: classify uses the model itself


def test_classify_walks_every_runs_forest_together_with_each_models_own_result(monkeypatch):
    """``classify.forests_together``: a calibrated forest keeps its temperature, a scikit-learn-engine model and a
    lone forest are left to their own ``predict_window``, and what it gives equals each model's own, bit for bit."""
    from pathlib import Path

    from rasterio.windows import Window

    import chain.features as features_mod
    from chain import classify
    from chain.grid import Tile
    from chain.models.base import CalibratedPredictor, PixelPredictor

    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    fit = [RandomForestClassifier(9, random_state=i).fit(X, np.digitize(X[:, i], [-0.5, 0.5]) + i) for i in range(3)]
    models = {Path("a"): PixelPredictor(forest.FastForest(fit[0], threads=1)),
              Path("b"): CalibratedPredictor(PixelPredictor(forest.FastForest(fit[1], threads=1)), 1.7),
              Path("c"): PixelPredictor(fit[2]),  # classify.engine: sklearn
              Path("d"): PixelPredictor(forest.FastForest(fit[2], threads=1))}
    values = rng.normal(size=(8, 40, 50)).astype(np.float32)
    values[3, :5] = np.nan  # not mappable
    n_valid = np.full((40, 50), 4, np.uint16)
    n_valid[-3:] = 0
    block = features_mod.FeatureBlock(values, n_valid, {"S2": n_valid})
    monkeypatch.setattr(classify, "cached_model", lambda folder, *a, **k: models[folder])
    monkeypatch.setattr(features_mod, "compute_features", lambda cat, spec, window: block)
    tile = Tile(0, 0, Window(0, 0, 50, 40))
    got = classify.forests_together(tile, None, None, list(models))
    assert sorted(got) == [Path("a"), Path("b"), Path("d")]
    for folder, (valid, proba, per_sensor) in got.items():
        own = models[folder].predict_window(None, None, tile.window)
        np.testing.assert_array_equal(valid, own[0])
        np.testing.assert_array_equal(proba, own[1])
        assert per_sensor is block.per_sensor
    assert valid.sum() == 40 * 50 - 5 * 50 - 3 * 50
    assert classify.forests_together(tile, None, None, [Path("a"), Path("c")]) == {}  # one forest: nothing to share
    monkeypatch.setattr(classify, "STACK_BYTES", 1)  # one forest per walk at most: each left to walk alone
    assert classify.forests_together(tile, None, None, list(models)) == {}
