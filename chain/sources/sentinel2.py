"""Sentinel-2 L2A series (``inputs.s2``), in any of the product formats registered under ``chain.s2_formats``.

The section is the same whatever the format (``inputs.s2.format``: ``folders``, ``theia``,
``sen2cor``); each format is one module that finds the products and knows its own constants (nodata,
cloud-mask values). What they find becomes one ``OpticalSeries`` named ``s2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import Field, field_validator

from chain.plugins import Registry
from chain.schema import PathFromConfig, ResamplingName, Section
from chain.sources.base import Header, read_header
from chain.sources.optical import Acquisition, OpticalSeries, check_headers, check_scale, within_range

if TYPE_CHECKING:
    from chain.config import Config

S2_BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
# Sentinel-2 bands by their common names (STAC eo:common_name), for the spectral indices
COMMON = (("B1", "coastal"), ("B2", "blue"), ("B3", "green"), ("B4", "red"), ("B5", "rededge1"), ("B6", "rededge2"),
          ("B7", "rededge3"), ("B8", "nir"), ("B8A", "nir08"), ("B9", "nir09"), ("B11", "swir1"), ("B12", "swir2"))


class S2Input(Section):
    """Sentinel-2 series: one folder per date (single-band GeoTIFFs + a mask), or THEIA / Sen2Cor L2A products."""

    path: PathFromConfig
    format: str = "folders"  # a registered product format: folders, theia, sen2cor
    theia_reflectance: Literal["FRE", "SRE"] = "FRE"  # THEIA: flat (slope-corrected) or surface reflectance
    sen2cor_snow_invalid: bool = False  # Sen2Cor: treat SCL class 11 (snow) as invalid
    bands: list[str] = Field(default_factory=lambda: list(S2_BANDS), min_length=1)
    date_regex: str = r"(?P<date>\d{8})"
    mask_name: str = "MASK"
    mask_valid_values: list[int] = Field(default_factory=lambda: [0])
    nodata: float | None = None
    saturation: float | None = None
    scale: float = Field(1e-4, gt=0)
    offset: float = 0.0
    resampling: ResamplingName = "bilinear"

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        names = FORMATS.names()
        if value not in names:
            raise ValueError(f"unknown format {value!r}; choose one of {', '.join(names)}")
        return value


class S2Format(Protocol):
    """A product format: finds the products of ``inputs.s2`` and says what its files mean."""

    name: str

    def discover(self, cfg: S2Input) -> list[Acquisition]: ...

    def nodata(self, cfg: S2Input, declared: float | None) -> float | None:
        """The no-data value of the bands (``declared``: the files' own tag)."""

    def mask_valid_values(self, cfg: S2Input) -> tuple[int, ...]: ...


FORMATS: Registry[Any] = Registry("chain.s2_formats", "Sentinel-2 product format")


class Sentinel2(OpticalSeries):
    name: ClassVar[str] = "s2"
    title: ClassVar[str] = "Sentinel-2"
    config: ClassVar[type[Section]] = S2Input
    feature_rank: ClassVar[int] = 10
    grid_rank: ClassVar[int] = 10

    @classmethod
    def discover(cls, section: Any, cfg: Config) -> Sentinel2:
        s2: S2Input = section
        fmt: S2Format = FORMATS.get(s2.format, "inputs.s2.format")()
        acquisitions = within_range(cfg, fmt.discover(s2), cls.title)
        headers: dict[str, Header] = {}
        for acq in acquisitions:  # every file's header: the input check that runs before any heavy work
            for path in [*acq.bands.values(), acq.mask, *acq.extra_masks]:
                headers[path] = read_header(path)
        first = headers[acquisitions[0].bands[s2.bands[0]]]
        # the files' own no-data tags matter only when neither the user nor the format says what no-data is
        known = s2.nodata is not None or fmt.nodata(s2, None) is not None
        check_headers(f"{cls.title} ({s2.path})", "inputs.s2", acquisitions, headers, nodata_given=known)
        nodata = s2.nodata if s2.nodata is not None else fmt.nodata(s2, first.nodata)
        check_scale(cls.title, "inputs.s2", first.path, nodata, s2.scale, s2.offset)
        return cls(bands=tuple(s2.bands), acquisitions=tuple(acquisitions), common=COMMON,
                   nodata=nodata, scale=s2.scale,
                   offset=s2.offset, saturation=s2.saturation, mask_valid_values=fmt.mask_valid_values(s2),
                   resampling=s2.resampling)
