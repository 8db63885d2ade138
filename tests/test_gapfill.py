import datetime as dt

import numpy as np
import pytest

from chain.gapfill import date_grid, linear


def test_interpolates_between_nearest_valid_and_replicates_edges():
    values = np.array([[1.0], [2.0], [3.0], [5.0]], np.float32)
    valid = np.array([[True], [False], [True], [False]])
    out = linear(values, valid, np.array([0, 10, 20, 30]), np.array([-5, 0, 5, 10, 15, 20, 25, 30, 35]))
    # before the first valid: first valid value; the invalid date 10 is interpolated from 0 and 20;
    # after the last valid (20): replicated, the invalid value 5.0 at 30 never leaks in
    np.testing.assert_allclose(out[:, 0], [1, 1, 1.5, 2, 2.5, 3, 3, 3, 3])


def test_leading_invalid_dates_take_first_valid_value():
    values = np.array([[9.0], [9.0], [4.0], [6.0]], np.float32)
    valid = np.array([[False], [False], [True], [True]])
    out = linear(values, valid, np.array([0, 10, 20, 30]), np.array([0, 10, 25]))
    np.testing.assert_allclose(out[:, 0], [4, 4, 5])


def test_all_cloudy_pixel_is_nan_and_others_unaffected():
    values = np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)
    valid = np.array([[True, False], [True, False]])
    out = linear(values, valid, np.array([0, 10]), np.array([0, 5, 10]))
    np.testing.assert_allclose(out[:, 0], [1, 2, 3])
    assert np.isnan(out[:, 1]).all()


def test_bands_share_the_validity_of_their_date():
    values = np.stack([np.array([[0.0], [5.0], [10.0]]), np.array([[100.0], [0.0], [300.0]])], axis=1).astype(np.float32)
    valid = np.array([[True], [False], [True]])
    out = linear(values, valid, np.array([0, 1, 2]), np.array([1]))
    np.testing.assert_allclose(out[0, :, 0], [5.0, 200.0])


def test_matches_numpy_interp_per_pixel_on_random_series():
    rng = np.random.default_rng(0)
    T, N = 17, 300
    days = np.cumsum(rng.integers(1, 20, T))
    values = rng.normal(size=(T, N)).astype(np.float32)
    valid = rng.random((T, N)) > 0.6
    out_days = np.arange(days[0] - 15, days[-1] + 15, 7)
    out = linear(values, valid, days, out_days)
    for n in range(N):
        v = valid[:, n]
        if not v.any():
            assert np.isnan(out[:, n]).all()
            continue
        # np.interp also holds the end values constant outside the valid range
        expected = np.interp(out_days, days[v], values[v, n])
        np.testing.assert_allclose(out[:, n], expected, rtol=1e-5, atol=1e-5)


def test_rejects_unsorted_dates_and_bad_mask_shape():
    with pytest.raises(ValueError):
        linear(np.zeros((2, 3), np.float32), np.ones((2, 3), bool), np.array([5, 1]), np.array([2]))
    with pytest.raises(ValueError):
        linear(np.zeros((2, 3), np.float32), np.ones((3, 2), bool), np.array([1, 5]), np.array([2]))


def test_date_grid_is_regular_and_inclusive():
    g = date_grid(dt.date(2021, 1, 1), dt.date(2021, 1, 31), 10)
    assert g == [dt.date(2021, 1, 1), dt.date(2021, 1, 11), dt.date(2021, 1, 21), dt.date(2021, 1, 31)]


def test_spline_follows_the_otb_rule_per_pixel():
    from scipy.interpolate import Akima1DInterpolator, CubicSpline

    from chain.gapfill import spline

    rng = np.random.default_rng(3)
    T, N = 12, 400
    days = np.cumsum(rng.integers(3, 25, T))
    values = rng.normal(size=(T, N)).astype(np.float32)
    valid = rng.random((T, N)) > rng.uniform(0.2, 0.9, N)  # from 0 to all dates valid
    out_days = np.arange(days[0] - 20, days[-1] + 20, 5)
    out = spline(values, valid, days, out_days)
    for n in range(N):
        v = valid[:, n]
        x, y = days[v].astype(float), values[v, n].astype(float)
        if len(x) == 0:
            assert np.isnan(out[:, n]).all()
            continue
        if len(x) < 3:
            expected = np.interp(out_days, x, y)
        else:
            f = CubicSpline(x, y, bc_type="natural") if len(x) <= 4 else Akima1DInterpolator(x, y)
            expected = f(np.clip(out_days, x[0], x[-1]))  # edges replicated, never extrapolated
        np.testing.assert_allclose(out[:, n], expected, rtol=1e-5, atol=1e-5)
    # through a valid observation, every method returns it
    assert np.allclose(spline(values, np.ones_like(valid), days, days), values, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32])
def test_compiled_kernel_is_bit_identical_to_the_vectorised_rule(dtype):
    """The numba pass (chain.gapfill.linear_into) against the numpy rule, edges, all-cloudy and all-clear pixels,
    output dates before, between, on and after the input dates; with and without the reflectance scale."""
    from chain.gapfill import _linear_numpy, linear_into

    rng = np.random.default_rng(7)
    T, B, N = 30, 4, 4000
    values = rng.integers(-10000, 15000, (T, B, N)).astype(dtype)
    if dtype == np.float32:
        values *= np.float32(1e-4)
    valid = rng.random((T, N)) < rng.uniform(0.05, 0.95, N)  # every pixel its own cloudiness
    valid[:, :20], valid[:, 20:40] = False, True
    valid[:, 40:60] = False
    valid[rng.integers(0, T, 20), np.arange(40, 60)] = True  # a single clear date
    in_days = np.sort(rng.choice(np.arange(1, 365), T, replace=False))
    out_days = np.r_[in_days[:3], np.arange(-20, 390, 9)]
    out_days = np.unique(out_days)
    ref = _linear_numpy(values, valid, in_days, out_days)
    np.testing.assert_array_equal(linear(values, valid, in_days, out_days), ref)
    out = np.empty((B, len(out_days), N), np.float32)
    linear_into(values, valid, in_days, out_days, out, scale=1e-4, offset=-0.1)
    np.testing.assert_array_equal(out, (ref * np.float32(1e-4) + np.float32(-0.1)).transpose(1, 0, 2))
    seen = valid.any(axis=0)
    assert np.isnan(out[:, :, ~seen]).all() and np.isfinite(out[:, :, seen]).all() and not seen[:20].any()
