"""`chain compare`: the change between two land-cover maps (e.g. two years), block by block."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from chain.atomic import atomic_path, write_text
from chain.errors import InputError
from chain.grid import GridSpec
from chain.html_report import CSS, html_table, png_uri
from chain.raster import open_raster, read_on_grid
from chain.report import pyplot

log = logging.getLogger(__name__)
CHANGE_NODATA = 0


def class_names_of(map_path: Path) -> dict[int, str]:
    """Class names from the nomenclature.csv next to a chain map, else from GDAL category names."""
    csv_path = map_path.parent / "nomenclature.csv"
    if csv_path.exists():
        with open(csv_path) as fh:
            return {int(r["code"]): r["name"] for r in csv.DictReader(fh)}
    aux = map_path.with_name(map_path.name + ".aux.xml")
    cats = re.findall(r"<Category>(.*?)</Category>", aux.read_text()) if aux.exists() else []
    return {i: n for i, n in enumerate(cats) if n}


def _overlap_share(grid: GridSpec, b: Any) -> float:
    """The share of A's extent that B covers."""
    from rasterio.warp import transform_bounds

    bb = transform_bounds(b.crs, grid.crs, *b.bounds) if b.crs != grid.crs else tuple(b.bounds)
    al, ab, ar, at = grid.bounds
    w = max(0.0, min(ar, bb[2]) - max(al, bb[0]))
    h = max(0.0, min(at, bb[3]) - max(ab, bb[1]))
    return w * h / ((ar - al) * (at - ab))


def default_out_dir(map_a: Path, map_b: Path) -> Path:
    """``change_<A>_<B>`` beside A, named by what tells the maps apart (the year folders, when the files have one name)."""
    a, b = map_a.resolve(), map_b.resolve()
    if a.stem != b.stem:
        return map_a.parent / f"change_{a.stem}_{b.stem}"
    pa, pb = a.parts[::-1], b.parts[::-1]
    differ = next(((x, y) for x, y in zip(pa[1:], pb[1:], strict=False) if x != y), (a.parent.name, b.parent.name))
    return map_a.parent / f"change_{differ[0]}_{differ[1]}_{a.stem}"


def compare_maps(map_a: Path, map_b: Path, out_dir: Path, nodata: int = 0,
                 confident: tuple[Path, Path, int] | None = None) -> dict[str, Any]:
    """Write change_matrix.csv, change.tif (from * 256 + to) and change.html into ``out_dir``. ``confident``: the two
    maps' confidence rasters and a minimum (0-100): only pixels at least that confident in both maps are counted."""
    with open_raster(map_a) as a:
        if a.count != 1 or a.dtypes[0] != "uint8":
            raise InputError(f"{map_a}: expected a single-band uint8 class map, got {a.count} band(s) of {a.dtypes[0]}")
        grid = GridSpec(a.crs.to_wkt(), tuple(a.transform)[:6], a.width, a.height)
        windows = [w for _, w in a.block_windows(1)]
    with open_raster(map_b) as b:
        if b.crs is None:
            raise InputError(f"{map_b}: the map has no CRS")
        overlap = _overlap_share(grid, b)
    if overlap < 0.999:
        log.warning("%s and %s cover different areas: %.1f %% of A is covered by B; the change matrix counts the common "
                    "part only", map_a, map_b, 100 * overlap)
    counts = np.zeros((256, 256), dtype=np.int64)
    profile = {"driver": "GTiff", "dtype": "uint16", "count": 1, "width": grid.width, "height": grid.height,
               "crs": grid.crs, "transform": grid.affine, "nodata": CHANGE_NODATA, "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "change.tif") as tmp:
        with rasterio.open(map_a) as a, rasterio.open(tmp, "w", **profile) as dst, \
                (rasterio.open(confident[0]) if confident is not None else contextlib.nullcontext()) as conf_a:
            for w in windows:
                va = a.read(1, window=w)
                vb = read_on_grid(map_b, grid, w, nodata=nodata)  # warped (nearest) when the grids differ
                ok = (va != nodata) & (vb != nodata)
                if confident is not None and conf_a is not None:  # A's confidence is on A's grid; B's is warped like B
                    ok &= conf_a.read(1, window=w) >= confident[2]
                    ok &= read_on_grid(confident[1], grid, w, nodata=0) >= confident[2]
                counts += np.bincount(va[ok].astype(np.int64) * 256 + vb[ok], minlength=65536).reshape(256, 256)
                dst.write(np.where(ok, va.astype(np.uint16) * 256 + vb, CHANGE_NODATA).astype(np.uint16), 1, window=w)
            dst.set_band_description(1, "change code = class in A * 256 + class in B")
    codes = sorted(set(np.flatnonzero(counts.sum(1))) | set(np.flatnonzero(counts.sum(0))))
    matrix = counts[np.ix_(codes, codes)]
    pixel_ha = abs(grid.res[0] * grid.res[1]) / 10_000
    names: dict[Any, str] = {**class_names_of(map_b), **class_names_of(map_a)}
    label = [f"{c} {names.get(c, '')}".strip() for c in codes]

    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["from_code", "from_name", "to_code", "to_name", "pixels", "area_ha"])
    for i, ci in enumerate(codes):
        for j, cj in enumerate(codes):
            if matrix[i, j]:
                wr.writerow([ci, names.get(ci, ""), cj, names.get(cj, ""), int(matrix[i, j]), round(matrix[i, j] * pixel_ha, 4)])
    write_text(out_dir / "change_matrix.csv", buf.getvalue())

    total = int(matrix.sum())
    changed = total - int(np.trace(matrix))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(0.8 * len(codes) + 3, 0.7 * len(codes) + 2.5))
    area = matrix * pixel_ha
    ax.imshow(np.log1p(area), cmap="viridis")
    for i in range(len(codes)):
        for j in range(len(codes)):
            ax.text(j, i, f"{area[i, j]:.1f}", ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(codes)), label, rotation=45, ha="right")
    ax.set_yticks(range(len(codes)), label)
    ax.set_xlabel(f"B: {map_b.name}")
    ax.set_ylabel(f"A: {map_a.name}")
    ax.set_title("area (ha) from class in A to class in B")
    fig.tight_layout()
    rows = [[f"{label[i]} → {label[j]}", int(matrix[i, j]), f"{matrix[i, j] * pixel_ha:.2f}"]
            for i, j in sorted(zip(*np.nonzero(matrix), strict=False), key=lambda ij: -matrix[ij]) if i != j][:30]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>chain compare</title><style>{CSS}</style></head><body>"
            f"<h1>Change between two maps</h1><p>A: {html.escape(str(map_a))}<br>B: {html.escape(str(map_b))}</p>"
            + (f"<p>Only pixels at least {confident[2]} % confident in both maps are counted.</p>" if confident else "")
            + f"<p>{total:,} pixels compared ({total * pixel_ha:.1f} ha); {changed:,} changed "
            f"({100 * changed / max(total, 1):.1f} %, {changed * pixel_ha:.1f} ha).</p>"
            f"<img alt='change matrix' src='{png_uri(fig)}'><h2>Largest changes</h2>"
            + html_table(["from → to", "pixels", "area (ha)"], rows) + "</body></html>")
    write_text(out_dir / "change.html", page)
    return {"pixels": total, "changed": changed, "codes": codes, "matrix": matrix}
