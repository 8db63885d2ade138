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
    from scipy import stats

    rng = np.random.default_rng(3)
    for n in (2, 5, 10, 30):  # the same bits as scipy.stats' quantile, which chain.metrics does not import
        v = rng.random(n)
        assert mean_ci(list(v), 0.9)[1] == stats.t.ppf(0.95, n - 1) * v.std(ddof=1) / np.sqrt(n)


def test_area_estimates_follow_the_stratified_estimator():
    from chain.metrics import area_estimates

    # rows = reference, columns = map; transpose of the map-by-reference sample table
    by_map = np.array([[66, 0, 1, 2], [0, 55, 0, 1], [5, 8, 153, 9], [4, 12, 11, 313]])
    map_px = np.array([200_000, 150_000, 3_200_000, 6_450_000])
    est = area_estimates(by_map.T, map_px, pixel_area=0.09)
    W = map_px / map_px.sum()
    n_i = by_map.sum(1)
    expected0 = (W * by_map[:, 0] / n_i).sum() * map_px.sum() * 0.09
    assert np.isclose(est["adjusted"][0], expected0)
    assert np.isclose(est["adjusted"].sum(), map_px.sum() * 0.09)  # the areas add up to the map
    se0 = np.sqrt((W**2 * (by_map[:, 0] / n_i) * (1 - by_map[:, 0] / n_i) / (n_i - 1)).sum())
    assert np.isclose(est["ci"][0], 1.96 * se0 * map_px.sum() * 0.09)
    # a perfect map: adjusted = mapped, no uncertainty
    perfect = area_estimates(np.diag([10, 20]), np.array([100, 300]), 1.0)
    np.testing.assert_allclose(perfect["adjusted"], [100, 300])
    np.testing.assert_allclose(perfect["ci"], 0)


def test_a_class_without_reference_pixels_is_undefined_not_zero():
    cm = confusion(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 3]), [1, 2, 3])  # class 3: predicted, never in the reference
    s = scores(cm)
    assert np.isnan(s["recall"][2]) and np.isnan(s["f1"][2]) and s["precision"][2] == 0.0
    assert np.isclose(s["macro_f1"], np.mean([1.0, 2 * 1 * 0.5 / 1.5]))  # the mean over classes 1 and 2 only
    m, h = mean_ci([0.5, float("nan"), 0.7])
    assert np.isclose(m, 0.6) and np.isfinite(h)


def test_reports_write_strict_json_and_say_n_a(tmp_path):
    import json

    from chain.report import run_metrics, write_reports

    labels = [1, 2, 3]
    runs = [run_metrics(confusion(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 3]), labels), labels)]
    write_reports(tmp_path, runs, labels, {1: "a", 2: "b", 3: "c"}, "validation")

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    doc = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)  # as JSON.parse / jq read it
    assert doc["summary"]["oa"]["ci95"] is None and doc["runs"][0]["per_class"]["3"]["f1"] is None
    text = (tmp_path / "RESULTS.txt").read_text()
    assert "Mean F1 (classes with validation pixels) = 0.833" in text
    assert [line for line in text.splitlines() if line.startswith("3 c")][0].split()[-1] == "n/a"
