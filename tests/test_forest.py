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
