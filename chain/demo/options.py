"""The ``demo:`` config section: when present, ``chain run`` generates the demo scene at the input paths if missing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from chain.schema import Section


class NextYear(Section):
    """The scene one year later (``demo.next_year``): the same landscape, some fields changed class, another season."""

    changed_share: float = Field(0.15, ge=0, le=0.9)  # share of the fields whose class changes
    phenology_shift_days: float = 12.0  # the season (harvest dates, cycles) this many days later, +- 6 days per field
    spot_offset_m: tuple[float, float] = (4.0, -3.0)  # the SPOT image's misregistration (east, north) against last year's


class DemoConfig(Section):
    """When present, ``chain run`` generates the synthetic demo scene at the input paths if missing."""

    size_px: int = Field(500, ge=32, le=20000)
    n_dates: int = Field(24, ge=3, le=150)
    n_fields: int = Field(250, ge=8)
    seed: int = 0
    year: int = 2021
    layout: Literal["folders", "theia", "theia_zip", "sen2cor", "sen2cor_zip"] = "folders"  # how the S2 series is written
    s1: bool = False  # also write a Sentinel-1-like VV/VH series in <folder>/s1
    spot: Literal["none", "dimap", "dimap_jp2", "geotiff"] = "none"  # also write a SPOT-6/7-like PAN + MS pair in <folder>/spot
    s2_tiles: Literal[1, 2] = 1  # 2: each date as two overlapping products (tiles T40KCB and T40KDB)
    landsat: bool = False  # also write a Landsat 8/9 Collection 2 Level-2 series in <folder>/landsat
    # hard: a scene that tells models apart: confusable classes (fallow, young cane), variability across the
    # scene, mixed pixels at field borders, label noise in the reference, more clouds
    difficulty: Literal["normal", "hard"] = "normal"
    # small objects (with spot): that many 2-4 px isolated trees and huts on the SPOT PAN pixels, half of them
    # reference polygons (classes "isolated tree", "hut"): what downsampling networks lose
    small_objects: int = Field(0, ge=0)
    # the scene of the year after `year - 1` with the same seed: the images of `year`, and as reference.gpkg last year's
    # polygons (what a user has at update time); reference_truth.gpkg, truth.tif and changes.csv say what changed
    next_year: NextYear | None = None

    @model_validator(mode="after")
    def _tiles_need_products(self) -> DemoConfig:
        if self.s2_tiles == 2 and self.layout == "folders":
            raise ValueError("s2_tiles: 2 writes each date as two overlapping products, which needs a product layout: "
                             "set demo.layout to theia, sen2cor, theia_zip or sen2cor_zip")
        return self
