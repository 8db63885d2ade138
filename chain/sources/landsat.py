"""Landsat Collection 2 Level-2 surface reflectance (``inputs.landsat``), as the USGS delivers it.

A product ``LC09_L2SP_<PPPRRR>_<YYYYMMDD>_<yyyymmdd>_02_T1`` (LC08/LC09 OLI; LE07 ETM+, LT05/LT04 TM
too) holds ``<id>_SR_B<n>.TIF`` (uint16, 30 m, DN 0 = fill), ``<id>_QA_PIXEL.TIF`` (uint16 bit
flags: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow) and ``<id>_MTL.txt``
(date, WRS path/row, and the reflectance scale 2.75e-05 and offset -0.2 of Collection 2). Products
may be folders, the ``.tar`` archives they are delivered in (read in place through GDAL's
/vsitar/), or loose files, anywhere below ``inputs.landsat.path``.

Bands are named in the OLI numbering (B1 coastal, B2 blue, B3 green, B4 red, B5 nir, B6 swir1,
B7 swir2); TM and ETM+ products are read by the same names through their common names (their blue
is B1), so a series may mix Landsat 5 to 9. Features are ``LS_<band>_<YYYYMMDD>`` and
``LS_<INDEX>_<YYYYMMDD>``, gap-filled on the ``gapfill:`` date grid like Sentinel-2's.
"""

from __future__ import annotations

import datetime as dt
import re
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from chain.errors import InputError, InputMissingError
from chain.schema import PathFromConfig, ResamplingName, Section
from chain.sources.base import Header, read_header
from chain.sources.optical import Acquisition, OpticalSeries, within_range

if TYPE_CHECKING:
    from chain.config import Config

PRODUCT = re.compile(r"^(?P<sensor>L[COTE]0[4-9])_L2S[PR]_(?P<path>\d{3})(?P<row>\d{3})_(?P<date>\d{8})_\d{8}_02_(T1|T2|RT)$")
OLI = (("B1", "coastal"), ("B2", "blue"), ("B3", "green"), ("B4", "red"), ("B5", "nir"), ("B6", "swir1"), ("B7", "swir2"))
# TM / ETM+ file band of each common name
TM = {"blue": "B1", "green": "B2", "red": "B3", "nir": "B4", "swir1": "B5", "swir2": "B7"}
SCALE, OFFSET = 2.75e-05, -0.2  # Collection 2 surface reflectance = DN x SCALE + OFFSET
FILL = 0  # SR DN of fill pixels
BITS = {"fill": 0, "dilated_cloud": 1, "cirrus": 2, "cloud": 3, "cloud_shadow": 4, "snow": 5}


class LandsatInput(Section):
    """Landsat Collection 2 Level-2 surface reflectance products (folders, .tar archives or loose files)."""

    path: PathFromConfig
    bands: list[str] = Field(default_factory=lambda: ["B2", "B3", "B4", "B5", "B6", "B7"], min_length=1)  # OLI numbering
    cirrus_invalid: bool = True  # QA_PIXEL bit 2 (OLI only) marks a pixel invalid
    snow_invalid: bool = False  # QA_PIXEL bit 5 marks a pixel invalid
    resampling: ResamplingName = "bilinear"

    @field_validator("bands")
    @classmethod
    def _oli_bands(cls, value: list[str]) -> list[str]:
        known = [b for b, _ in OLI]
        bad = [b for b in value if b not in known]
        if bad:
            raise ValueError(f"unknown band(s) {bad}; Landsat surface reflectance bands are {known} (OLI numbering)")
        return value


def read_mtl(text: str, where: str) -> dict[str, str]:
    """``KEY = VALUE`` pairs of an MTL.txt (ODL), quotes removed; the last group wins for repeated keys."""
    out = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = (p.strip() for p in line.split("=", 1))
            if key not in ("GROUP", "END_GROUP"):
                out[key] = value.strip('"')
    if "DATE_ACQUIRED" not in out:
        raise InputError(f"{where}: not a Landsat MTL file (no DATE_ACQUIRED)")
    return out


def _products(root: Path) -> list[tuple[str, str, str, set[str]]]:
    """(product id, GDAL prefix of its files, MTL text, names of the files beside it) of every product below ``root``."""
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name.upper().endswith("_MTL.TXT"):
            found.append((p.name[: -len("_MTL.txt")], str(p.parent), p.read_text(errors="replace"),
                          {q.name for q in p.parent.iterdir()}))
        elif p.is_file() and p.suffix.lower() == ".tar":
            try:
                with tarfile.open(p) as tar:
                    members = [m for m in tar.getmembers() if m.isfile()]
                    for m in members:
                        if m.name.upper().endswith("_MTL.TXT"):
                            fh = tar.extractfile(m)
                            text = fh.read().decode(errors="replace") if fh else ""
                            inner = Path(m.name).parent
                            siblings = {Path(o.name).name for o in members if Path(o.name).parent == inner}
                            prefix = f"/vsitar/{p}" + ("" if str(inner) == "." else f"/{inner}")
                            found.append((Path(m.name).name[: -len("_MTL.txt")], prefix, text, siblings))
            except (tarfile.TarError, OSError) as exc:
                raise InputError(f"Landsat archive {str(p)!r} is not a readable .tar ({exc}); download it again") from None
    return found


class Landsat(OpticalSeries):
    name: ClassVar[str] = "landsat"
    title: ClassVar[str] = "Landsat"
    config: ClassVar[type[Section]] = LandsatInput
    feature_rank: ClassVar[int] = 20
    grid_rank: ClassVar[int] = 15
    prefix: ClassVar[str] = "LS_"
    label: ClassVar[str] = "LANDSAT"
    clear_band: ClassVar[str] = "Landsat clear dates"

    @classmethod
    def discover(cls, section: Any, cfg: Config) -> Landsat:
        lc: LandsatInput = section
        if not lc.path.is_dir():
            raise InputMissingError(f"inputs.landsat.path: folder {str(lc.path)!r} does not exist (expected Landsat Collection 2 "
                                    "Level-2 products: folders, .tar archives or their files)")
        common = dict(OLI)
        acquisitions: dict[tuple[dt.date, str], Acquisition] = {}
        for pid, prefix, text, files in _products(lc.path):
            m = PRODUCT.match(pid)
            where = f"{prefix}/{pid}_MTL.txt"
            if not m:
                raise InputError(f"{where}: {pid!r} is not a Landsat Collection 2 Level-2 product identifier "
                                 "(like LC09_L2SP_164074_20210105_20210308_02_T1)")
            mtl = read_mtl(text, where)
            tm = m["sensor"][:2] in ("LT", "LE")
            bands, missing = {}, []
            for band in lc.bands:
                number = TM.get(common[band]) if tm else band
                if number is None:
                    raise InputError(f"{where}: a {m['sensor']} product has no {band} ({common[band]}) band; "
                                     "remove it from inputs.landsat.bands")
                fname = f"{pid}_SR_{number}.TIF"
                if fname in files:
                    bands[band] = f"{prefix}/{fname}"
                else:
                    missing.append(fname)
            if f"{pid}_QA_PIXEL.TIF" not in files:
                missing.append(f"{pid}_QA_PIXEL.TIF")
            if missing:
                raise InputMissingError(f"Landsat product {prefix!r} lacks {', '.join(missing[:4])}; is the download complete?")
            for key, want in (("REFLECTANCE_MULT_BAND_2", SCALE), ("REFLECTANCE_ADD_BAND_2", OFFSET)):
                if key in mtl and abs(float(mtl[key]) - want) > 1e-9:
                    raise InputError(f"{where}: {key} is {mtl[key]}, not Collection 2's {want}; only Collection 2 Level-2 is read")
            date = dt.date.fromisoformat(mtl["DATE_ACQUIRED"])
            acquisitions[(date, pid)] = Acquisition(date, bands, f"{prefix}/{pid}_QA_PIXEL.TIF")
        if not acquisitions:
            raise InputMissingError(f"inputs.landsat.path: no Landsat Collection 2 Level-2 product in {str(lc.path)!r} "
                                    "(a <product id>_MTL.txt beside its _SR_B<n>.TIF and _QA_PIXEL.TIF files, or a .tar of them)")
        kept = within_range(cfg, [acquisitions[k] for k in sorted(acquisitions)], cls.title)
        for acq in kept:
            for path in [*acq.bands.values(), acq.mask]:
                read_header(path)
        bits = sum(1 << BITS[k] for k in ("fill", "dilated_cloud", "cloud", "cloud_shadow"))
        bits |= (1 << BITS["cirrus"]) if lc.cirrus_invalid else 0
        bits |= (1 << BITS["snow"]) if lc.snow_invalid else 0
        return cls(bands=tuple(lc.bands), acquisitions=tuple(kept), common=OLI, nodata=FILL, scale=SCALE, offset=OFFSET,
                   saturation=None, mask_valid_values=(), resampling=lc.resampling, mask_invalid_bits=bits)

    def grid_headers(self) -> list[Header]:
        return [read_header(a.bands[self.bands[0]]) for a in self.acquisitions]

    def summary(self) -> str:
        paths = sorted({re.search(r"_(\d{6})_\d{8}_", a.mask).group(1) for a in self.acquisitions})  # type: ignore[union-attr]
        return f"{super().summary()}, WRS path/row {' '.join(paths)}"
