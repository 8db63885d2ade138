import numpy as np
import pytest
from rasterio.crs import CRS

from chain.atomic import atomic_path, clean_temporaries
from chain.grid import GridSpec, make_tiles
from chain.seeds import derive_seed


def test_tiles_cover_the_grid_once():
    grid = GridSpec.from_bounds(CRS.from_epsg(32740), (0, 0, 1030, 770), 10)
    assert (grid.width, grid.height) == (103, 77)
    cover = np.zeros((grid.height, grid.width), int)
    tiles = make_tiles(grid, 32, halo_px=4)
    for t in tiles:
        w = t.window
        cover[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
        rw = t.read_window(grid)
        assert rw.col_off >= 0 and rw.row_off >= 0
        assert rw.col_off + rw.width <= grid.width and rw.row_off + rw.height <= grid.height
        rs, cs = t.core_slices(grid)
        assert (rs.stop - rs.start, cs.stop - cs.start) == (w.height, w.width)
    assert (cover == 1).all()
    assert len({t.id for t in tiles}) == len(tiles) == 4 * 3


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "split", 1) == derive_seed(0, "split", 1)
    assert len({derive_seed(0, "split", r) for r in range(100)}) == 100
    assert derive_seed(0, "split", 1) != derive_seed(1, "split", 1)


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_clean_temporaries_removes_leftovers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".x.tmp-1-abc.tif").write_text("x")
    (tmp_path / "a" / "keep.tif").write_text("x")
    assert clean_temporaries(tmp_path) == 1
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["keep.tif"]
