"""Segmentation (segment step): the same objects whatever the tiling, no seams along tile borders, outputs that open
in GIS as they are, resumable per tile."""

import numpy as np
import pytest
import rasterio

from chain import config
from chain.demo.vhr import write_vhr_scene
from chain.runner import run_pipeline
from chain.segmentation import boundaries

SIZE = 240


@pytest.fixture(scope="module")
def vhr(tmp_path_factory):
    return write_vhr_scene(tmp_path_factory.mktemp("vhr"), size_px=SIZE, n_fields=40, seed=5)


def vhr_config(scene, workdir, tile, cluster=None, **segmentation):
    seg = {"method": "felzenszwalb", "source": "features", "bands": ["*"], "scale": 200, "min_size_m2": 60, "halo_px": 48,
           **segmentation}
    return config.parse({
        "workdir": str(workdir), "seed": 1,
        "inputs": {"stack": {"path": str(scene / "vhr.tif")}, "reference": {"path": str(scene / "reference.gpkg"), "name_field": "name"}},
        "grid": {"tile_size_px": tile}, "segmentation": seg,
        "split": {"runs": 1, "small_class": "drop"}, "model": {"n_estimators": 20, "n_jobs": 1},
        "regularize": {"enabled": False},
        "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "memory_limit": "2GiB", **(cluster or {})},
    })


def segments(cfg):
    with rasterio.open(cfg.workdir / "final" / "segments.tif") as src:
        return src.read(1), src.profile


@pytest.mark.parametrize("method, agreement", [("felzenszwalb", 0.99), ("slic", 0.99)])
def test_segmentation_does_not_depend_on_the_tiling(vhr, tmp_path, method, agreement):
    extra = {"segment_size_m2": 300, "compactness": 0.1} if method == "slic" else {}
    whole = vhr_config(vhr, tmp_path / "whole", SIZE, method=method, **extra)
    run_pipeline(whole, to_step="segment")
    ref, profile = segments(whole)
    assert profile["dtype"] == "uint32" and profile["nodata"] == 0 and ref.min() > 0
    ref_b = boundaries(ref)
    for tile in (64, 100):
        cfg = vhr_config(vhr, tmp_path / f"t{tile}", tile, method=method, **extra)
        run_pipeline(cfg, to_step="segment")
        ids, _ = segments(cfg)
        b = boundaries(ids)
        agree = (b == ref_b).mean()
        assert agree >= agreement, f"{method}, tiles of {tile}: boundaries agree on {agree:.4f} of the pixels"
        # no straight seams: along the tile borders there are no more boundaries than the whole-scene run has there
        seam = np.zeros(ids.shape, bool)
        seam[:, tile - 1::tile] = True
        seam[tile - 1::tile, :] = True
        assert b[seam].mean() <= ref_b[seam].mean() * 1.1 + 0.01, (b[seam].mean(), ref_b[seam].mean())
        # the objects cross the tile borders whole: about as many objects as in the whole-scene run
        assert abs(len(np.unique(ids)) - len(np.unique(ref))) <= 0.1 * len(np.unique(ref))
        print(f"{method}, tiles of {tile}: boundaries agree on {agree:.4f}; {len(np.unique(ids))} vs {len(np.unique(ref))} objects")
        # every object is one 8-connected piece
        from skimage import measure

        pieces = measure.label(ids, background=0, connectivity=2)
        assert pieces.max() == len(np.unique(ids))


def test_segments_are_a_cog_and_a_gpkg_whose_polygons_match_the_raster(vhr, tmp_path):
    import geopandas as gpd
    from rasterio.features import rasterize
    from rio_cogeo.cogeo import cog_validate

    cfg = vhr_config(vhr, tmp_path / "w", 100)
    run_pipeline(cfg, to_step="segment")
    final = cfg.workdir / "final"
    assert cog_validate(str(final / "segments.tif"), quiet=True)[0]
    ids, profile = segments(cfg)
    gdf = gpd.read_file(final / "segments.gpkg")
    assert sorted(gdf["id"]) == list(range(1, ids.max() + 1))  # one feature per object, pieces from several tiles merged
    back = rasterize(zip(gdf.geometry, gdf["id"], strict=False), out_shape=ids.shape, transform=profile["transform"], dtype="uint32")
    assert (back == ids).mean() > 0.999
    np.testing.assert_allclose(gdf["area_m2"], np.bincount(ids.ravel())[gdf["id"]] * 1.5**2)


def test_segment_resumes_per_tile_and_gives_the_same_objects(vhr, tmp_path, monkeypatch):
    from chain import segmentation

    cfg = vhr_config(vhr, tmp_path / "w", 100, cluster={"retries": 0})
    real = segmentation.segment_tile

    def failing(tile, *args):
        if tile.id == "r001c001":
            raise RuntimeError("killed")
        return real(tile, *args)

    monkeypatch.setattr(segmentation, "segment_tile", failing)
    with pytest.raises(Exception, match="killed"):
        run_pipeline(cfg, to_step="segment")
    tiles = cfg.workdir / "segment" / "tiles"
    before = {p.name: p.stat().st_mtime_ns for p in tiles.glob("*.npz")}
    assert 1 <= len(before) < 9 and "r001c001.npz" not in before
    monkeypatch.setattr(segmentation, "segment_tile", real)
    run_pipeline(cfg, to_step="segment")
    assert {p.name: p.stat().st_mtime_ns for p in tiles.glob("*.npz") if p.name in before} == before  # kept, not redone
    assert (tiles / "r001c001.npz").exists()
    fresh = vhr_config(vhr, tmp_path / "fresh", 100)
    run_pipeline(fresh, to_step="segment")
    np.testing.assert_array_equal(segments(cfg)[0], segments(fresh)[0])
