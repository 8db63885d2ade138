"""Features users already have (``inputs.stack``): one multi-band raster, a folder of them, or a list.

Bands are named by ``inputs.stack.bands``, else by the files' band descriptions, else ``b1..bn``
(prefixed by the file's stem when there are several files). A pixel with no data in any band of a
file has no features from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from chain.errors import InputError, InputMissingError
from chain.schema import PathFromConfig, ResamplingName, Section
from chain.sources.base import RASTER_SUFFIXES, Header, Source, SourceBlock, read_header
from chain.spec import FeatureGroup

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.config import Config
    from chain.grid import GridSpec


class StackInput(Section):
    """Features users already have: one multi-band raster, or several (e.g. one per date)."""

    path: PathFromConfig | list[PathFromConfig]  # a file, a folder of .tif/.vrt, or a list of files
    bands: list[str] | None = None  # band names of each file; default: the band descriptions, else b1..bn
    nodata: float | None = None  # default: the files' own nodata
    resampling: ResamplingName = "nearest"


@dataclass(frozen=True)
class StackFile:
    path: str
    names: tuple[str, ...]  # feature name of each band


@dataclass(frozen=True)
class FeatureStack(Source):
    stack: tuple[StackFile, ...]
    nodata: float | None
    resampling: str

    name: ClassVar[str] = "stack"
    title: ClassVar[str] = "feature stack"
    config: ClassVar[type[Section]] = StackInput
    feature_rank: ClassVar[int] = 90
    grid_rank: ClassVar[int] = 20

    @classmethod
    def discover(cls, section: Any, cfg: Config) -> FeatureStack:
        import rasterio

        sc: StackInput = section
        paths = sc.path if isinstance(sc.path, list) else [sc.path]
        files: list[Path] = []
        for p in paths:
            if p.is_dir():
                found = sorted(q for q in p.iterdir() if q.suffix.lower() in RASTER_SUFFIXES)
                if not found:
                    raise InputMissingError(f"inputs.stack.path: folder {str(p)!r} holds no .tif/.vrt file")
                files += found
            elif p.exists():
                files.append(p)
            else:
                raise InputMissingError(f"inputs.stack.path: {str(p)!r} does not exist (expected a multi-band GeoTIFF, a folder of them, or a list)")
        out: list[StackFile] = []
        first: Header | None = None
        for f in files:
            h = read_header(str(f))
            first = first or h
            with rasterio.open(f) as src:
                descriptions = list(src.descriptions)
            if sc.bands is not None:
                if len(sc.bands) != h.count:
                    raise InputError(f"{f}: has {h.count} band(s) but inputs.stack.bands names {len(sc.bands)}; give one name per band")
                names = list(sc.bands)
            elif all(descriptions) and len(set(descriptions)) == len(descriptions):
                names = [str(d) for d in descriptions]
            else:
                names = [f"b{i}" for i in range(1, h.count + 1)]
            if len(files) > 1:
                names = [f"{f.stem}_{n}" for n in names]
            out.append(StackFile(str(f), tuple(names)))
        all_names = [n for f in out for n in f.names]
        dup = sorted({n for n in all_names if all_names.count(n) > 1})
        if dup:
            raise InputError(f"inputs.stack: feature names {dup[:5]} appear more than once; name the bands uniquely "
                             "(inputs.stack.bands or band descriptions)")
        assert first is not None
        return cls(tuple(out), sc.nodata if sc.nodata is not None else first.nodata, sc.resampling)

    def files(self) -> list[str]:
        return [f.path for f in self.stack]

    def grid_headers(self) -> list[Header]:
        return [read_header(self.stack[0].path)]

    def summary(self) -> str:
        return f"{len(self.stack)} file(s), {sum(len(f.names) for f in self.stack)} band(s)"

    def to_dict(self) -> dict[str, Any]:
        return {"stack": [{"path": f.path, "names": list(f.names)} for f in self.stack], "nodata": self.nodata,
                "resampling": self.resampling}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureStack:
        return cls(tuple(StackFile(f["path"], tuple(f["names"])) for f in d["stack"]), d["nodata"], d["resampling"])

    def groups(self, dates: dict[str, Any], cfg: Config) -> list[FeatureGroup]:
        return [FeatureGroup(self.name, "STACK", tuple(n for f in self.stack for n in f.names))]

    def read_files(self, grid: GridSpec, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The bands (F, h, w) float32 and, per file, validity (files, h, w)."""
        from rasterio.enums import Resampling

        from chain.masks import finite_everywhere
        from chain.raster import pixel_major, read_on_grid

        parts, valid = [], []
        for f in self.stack:
            arr = read_on_grid(f.path, grid, window, Resampling[self.resampling], nodata=self.nodata,
                               band=list(range(1, len(f.names) + 1))).astype(np.float32, copy=False)
            parts.append(arr)
            valid.append(finite_everywhere(arr, None if self.nodata is None else float(np.float32(self.nodata))))
        if len(parts) == 1:
            return parts[0], np.stack(valid)
        if all(pixel_major(p) is not None for p in parts):  # keep the pixel-major layout (see raster.read_window)
            return np.concatenate([p.transpose(1, 2, 0) for p in parts], axis=2).transpose(2, 0, 1), np.stack(valid)
        return np.concatenate(parts, axis=0), np.stack(valid)

    def read(self, grid: GridSpec, window: Window, groups: list[FeatureGroup], method: str) -> SourceBlock:
        values, ok = self.read_files(grid, window)
        everywhere = ok.all(axis=0)
        if not everywhere.all():
            values[:, ~everywhere] = np.nan
        count = ok.sum(axis=0).astype(np.uint16)
        return SourceBlock(values, count, {"feature stack valid files": count}, usable=np.asarray(everywhere))
