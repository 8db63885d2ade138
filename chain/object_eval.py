"""What the report says about object-based maps: object-level accuracy and fragmentation, against the pixel map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from chain.objects import ObjectTable


def fragmentation(map_path: Path, nodata: int = 0, strip_rows: int | None = None, strip_px: int = 2**22) -> dict[str, float]:
    """Connected regions of one class (4-connected) in a class map: their number, per km², and their mean area.

    Read in strips of rows (``strip_rows``, else as many rows as make ``strip_px`` pixels: memory is the
    same whatever the map's width); regions cut by a strip border are joined: connected components of the
    graph of the labels that touch across a border (only those: memory follows the borders, not the map).
    """
    import rasterio
    from rasterio.windows import Window
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage import measure

    links_a: list[np.ndarray] = []
    links_b: list[np.ndarray] = []
    n_labels, mapped = 0, 0
    prev: tuple[np.ndarray, np.ndarray] | None = None  # the last row of the previous strip: classes, labels
    with rasterio.open(map_path) as src:
        px_area = abs(src.transform.a * src.transform.e)
        rows = strip_rows or max(1, strip_px // src.width)
        for r0 in range(0, src.height, rows):
            cls = src.read(1, window=Window(0, r0, src.width, min(rows, src.height - r0)))
            lab = measure.label(np.where(cls == nodata, 0, cls.astype(np.int32) + 1), background=0, connectivity=1).astype(np.int64)
            lab[lab > 0] += n_labels
            n_labels = max(n_labels, int(lab.max(initial=0)))
            mapped += int((cls != nodata).sum())
            if prev is not None:
                same = (prev[0] == cls[0]) & (cls[0] != nodata)
                links_a.append(prev[1][same])
                links_b.append(lab[0][same])
            prev = (cls[-1].copy(), lab[-1].copy())
    if n_labels == 0:
        return {"regions": 0, "regions_per_km2": 0.0, "mean_region_m2": 0.0}
    a = np.concatenate(links_a) if links_a else np.empty(0, np.int64)
    b = np.concatenate(links_b) if links_b else np.empty(0, np.int64)
    linked, idx = np.unique(np.concatenate([a, b]), return_inverse=True)  # the labels touching across a border
    graph = coo_matrix((np.ones(len(a), np.int8), (idx[:len(a)], idx[len(a):])), shape=(len(linked), len(linked)))
    n_comp, _ = connected_components(graph, directed=False)
    regions = n_labels - (len(linked) - n_comp)  # each linked group of k labels is one region, not k
    km2 = mapped * px_area / 1e6
    return {"regions": int(regions), "regions_per_km2": regions / km2 if km2 else 0.0,
            "mean_region_m2": mapped * px_area / regions if regions else 0.0}


def object_accuracy(table: ObjectTable, split: pd.DataFrame, run: int, part: str, codes: np.ndarray) -> dict[str, Any]:
    """Share of the evaluation objects (labelled by a polygon of ``part``, not touching another part's polygons)
    whose mapped class (``codes``, per object id - 1) is the polygon's class."""
    from chain.objects import run_samples

    samples, mixed, rows = run_samples(table, split, run)
    ids = split.loc[(split["run"] == run) & (split["part"] == part), "poly_id"].to_numpy()
    sel = np.isin(samples.poly_id, ids)
    rows, truth = rows[sel], samples.code[sel]
    pred = codes[rows] if len(rows) else np.empty(0, np.uint8)
    mapped = pred > 0
    n = int(mapped.sum())
    return {"n_objects": n, "correct": float((pred[mapped] == truth[mapped]).mean()) if n else float("nan"),
            "left_out_mixed": mixed}
