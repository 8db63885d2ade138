"""The demo's Sentinel-1-like VV/VH series (linear sigma0, 4-look speckle), S1Tiling file names, ASC and DES."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from affine import Affine

from chain.demo.scene import cover, write_geotiff


def write_series(folder: Path, rng: np.random.Generator, code: np.ndarray, ids: np.ndarray, phase: np.ndarray,
              vigour: np.ndarray, n_dates: int, year: int, t10: Affine) -> None:
    """A Sentinel-1-like VV/VH series (linear sigma0, 4-look speckle), S1Tiling file names, ASC and DES."""
    field_db = rng.normal(0, 0.5, len(code)).astype(np.float32)
    slots = np.arange(3, 366, 6)
    days = np.sort(rng.choice(slots, size=min(n_dates, len(slots)), replace=False))
    for k, doy in enumerate(days):
        date = dt.date(year, 1, 1) + dt.timedelta(days=int(doy) - 1)
        direction, orbit, hour = ("ASC", "151", "143512") if k % 2 else ("DES", "078", "023456")
        f = cover(code, int(doy), phase, vigour)
        db = {
            "vv": np.select([code == 3, code == 5, code == 6], [-7.5, -3.0, -21.0], -13 + 5 * f),
            "vh": np.select([code == 3, code == 5, code == 6], [-12.5, -10.0, -27.0], -22 + 9 * f),
        }
        for pol, per_field in db.items():
            linear = 10 ** ((per_field + field_db)[ids] / 10)
            speckled = (linear * rng.gamma(4.0, 0.25, ids.shape)).astype(np.float32)
            write_geotiff(folder / f"s1{'ab'[k % 2]}_40KCB_{pol}_{direction}_{orbit}_{date:%Y%m%d}t{hour}.tif", speckled, t10, 0.0)


