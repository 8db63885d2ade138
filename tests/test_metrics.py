import numpy as np
from sklearn import metrics as skm

from chain.metrics import confusion, mean_ci, scores


def test_scores_match_scikit_learn():
    rng = np.random.default_rng(1)
    labels = [1, 2, 5, 9]
    ref = rng.choice(labels, 2000)
    pred = np.where(rng.random(2000) < 0.7, ref, rng.choice(labels, 2000))
    cm = confusion(ref, pred, labels)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(ref, pred, labels=labels))
    s = scores(cm)
    assert np.isclose(s["oa"], skm.accuracy_score(ref, pred))
    assert np.isclose(s["kappa"], skm.cohen_kappa_score(ref, pred, labels=labels))
    p, r, f, _ = skm.precision_recall_fscore_support(ref, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(s["precision"], p)
    np.testing.assert_allclose(s["recall"], r)
    np.testing.assert_allclose(s["f1"], f)


def test_labels_outside_the_list_are_ignored():
    cm = confusion(np.array([1, 1, 3]), np.array([1, 4, 3]), [1, 3])
    assert cm.tolist() == [[1, 0], [0, 1]]


def test_mean_ci_uses_student_t():
    m, h = mean_ci([0.8, 0.9, 1.0])
    assert np.isclose(m, 0.9)
    assert np.isclose(h, 4.302652729911275 * 0.1 / np.sqrt(3))
    assert np.isnan(mean_ci([0.5])[1])
