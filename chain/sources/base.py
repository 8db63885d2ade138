"""The source protocol: what every input kind (Sentinel-2, Sentinel-1, SPOT, a feature stack, ...) provides.

A source is one module with a config section (``inputs.<name>``) and a ``Source`` subclass, registered
under the ``chain.sources`` entry-point group. Its instance is a frozen, serialisable description of
the files discovery found (kept in the catalogue); it knows its own format constants, lists its
files (for fingerprints), names its features and reads a window of the grid.

Validity convention, shared by every source so that one rule (``chain.features.mappable``) decides
which pixel can be mapped: features are NaN where the source has no usable value; ``count`` says how
many observations a pixel has (clear dates, valid files; 0: none), and ``usable``, when not None,
marks the pixels this source covers at all (a pixel outside it is dropped whatever the others say).
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from chain.errors import ConfigError, InputError
from chain.schema import Section
from chain.spec import FeatureGroup

if TYPE_CHECKING:
    import numpy as np
    from rasterio.windows import Window

    from chain.config import Config
    from chain.grid import GridSpec

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".vrt"}


@dataclass(frozen=True)
class Header:
    """What a raster's header says (its grid and nodata)."""

    path: str
    crs: Any  # rasterio CRS
    transform: Any  # affine.Affine
    width: int
    height: int
    nodata: float | None
    count: int
    dtype: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        left, top = t.c, t.f
        return (left, top + t.e * self.height, left + t.a * self.width, top)


def read_header(path: str) -> Header:
    """The header of a raster (any GDAL path), with a message naming the file when it cannot be used."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(
                    f"raster {path!r} has no CRS; every input must be georeferenced (assign one with "
                    f"`gdal_edit.py -a_srs EPSG:xxxx {path}` if you know it)"
                )
            return Header(path, src.crs, src.transform, src.width, src.height, src.nodata, src.count, src.dtypes[0])
    except RasterioIOError as exc:
        raise InputError(f"raster {path!r} cannot be opened by GDAL ({exc}); the file may be corrupt or truncated") from None


@dataclass
class SourceBlock:
    """One source's features over a window (see the module docstring for the validity convention)."""

    values: np.ndarray  # (F, h, w) float32, NaN where unusable
    count: np.ndarray  # (h, w) uint16: observations of each pixel (0: none)
    per_sensor: dict[str, np.ndarray]  # PixelsValidity bands: name -> (h, w) uint16
    usable: np.ndarray | None = None  # (h, w) bool: the pixels this source covers; None: every pixel


class Source(ABC):
    """One input kind. Subclasses are frozen dataclasses holding what discovery found."""

    name: ClassVar[str]  # registry name = key under `inputs:` in the config
    title: ClassVar[str]  # for people: "Sentinel-2", "SPOT-6/7 PAN + MS", ...
    config: ClassVar[type[Section]]  # the config section's schema
    feature_rank: ClassVar[int]  # sources' feature groups are stacked by increasing rank
    grid_rank: ClassVar[int]  # without grid settings, the source of lowest rank gives the grid
    native_kinds: ClassVar[tuple[str, ...]] = ()  # images patch models may read on their own pixels
    validity_band: ClassVar[str] = ""  # its PixelsValidity band when patch models read only its native images

    # ---- discovery (ingest) ----------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def discover(cls, section: Any, cfg: Config) -> Source:
        """Find and check the files of ``section`` (headers only: cheap); raise Input(Missing)Error naming them."""

    @abstractmethod
    def files(self) -> list[str]:
        """Every file read (GDAL paths): fingerprinted to notice a replaced input."""

    @abstractmethod
    def grid_headers(self) -> list[Header]:
        """Headers that define the default grid: the first one's CRS and resolution, the union of their extents."""

    def check_area(self, grid: GridSpec) -> None:  # noqa: B027 - optional hook
        """Refuse, by name, a product that lies outside the area mapped (default: nothing to check)."""

    def summary(self) -> str:
        """One line for `chain validate` and the report."""
        return f"{len(self.files())} file(s)"

    # ---- serialisation (the catalogue) -----------------------------------------------------------

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> Source: ...

    # ---- features --------------------------------------------------------------------------------

    def date_grids(self, cfg: Config) -> dict[str, list[dt.date]]:
        """A series source's regular output dates, per group label (the gapfill step records them)."""
        return {}

    @abstractmethod
    def groups(self, dates: dict[str, list[dt.date]], cfg: Config) -> list[FeatureGroup]:
        """This source's feature groups, given the output dates ``date_grids`` gave."""

    @abstractmethod
    def read(self, grid: GridSpec, window: Window, groups: list[FeatureGroup], method: str) -> SourceBlock:
        """Features of ``window`` of ``grid``, in the order of ``groups``' names (series gap-filled by ``method``)."""

    @classmethod
    def series_index(cls, groups: list[tuple[int, FeatureGroup]]) -> tuple[tuple[int, ...], int]:
        """This source's series as one sequence for temporal models: stack indices, time-major, and the
        number of dates. The default takes a single series group."""
        series = [(o, g) for o, g in groups if g.is_series]
        if len(series) != 1:
            raise ConfigError(f"{cls.title}: {len(series)} series in the stack; this model needs exactly one")
        offset, g = series[0]
        per_channel = g.time_major(offset)
        return tuple(per_channel[c][t] for t in range(len(g.dates)) for c in range(len(g.channels))), len(g.dates)

    # ---- native images, for patch models ---------------------------------------------------------

    def native_channels(self, kind: str) -> int:
        raise ConfigError(f"{self.title} has no native image {kind!r}")

    def native_transform(self, kind: str) -> Any:
        raise ConfigError(f"{self.title} has no native image {kind!r}")

    def native_crs(self, kind: str) -> Any:
        raise ConfigError(f"{self.title} has no native image {kind!r}")

    def read_native(self, kind: str, top: int, left: int, height: int, width: int) -> np.ndarray:
        """(C, height, width) float32 of image ``kind`` on its own pixels, edge-padded outside the image."""
        raise ConfigError(f"{self.title} has no native image {kind!r}")

    def native_nodata(self) -> float | None:
        return None


def source_class(name: str, where: str = "") -> type[Source]:
    from chain.plugins import SOURCES

    cls: type[Source] = SOURCES.get(name, where)
    return cls
