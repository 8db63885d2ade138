"""ESA Sen2Cor Sentinel-2 L2A products (.SAFE folders or their .zip), read in place.

``S2{A,B,C}_MSIL2A_<YYYYMMDD>T<HHMMSS>_N<baseline>_R<orbit>_T<tile>_<YYYYMMDD>T<HHMMSS>.SAFE`` holds
``GRANULE/L2A_*/IMG_DATA/R10m/T<tile>_<datetime>_B02_10m.jp2`` (B02 B03 B04 B08) and ``R20m/..._B05_20m.jp2``
(B05 B06 B07 B8A B11 B12, and the scene classification ``SCL_20m.jp2``). DN 0 is no data.
Reflectance = (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE, both read from ``MTD_MSIL2A.xml``:
from processing baseline 04.00 on, the offset is -1000; before it there is none.
SCL classes that are not usable: 0 no data, 1 saturated or defective, 3 cloud shadow, 8 and 9 cloud
(medium and high probability), 10 thin cirrus; 11 (snow) optionally. (``inputs.s2.format: sen2cor``)
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from chain.errors import InputError, InputMissingError
from chain.sources.optical import Acquisition
from chain.sources.sentinel2 import S2Input

PRODUCT = re.compile(r"^S2[A-D]_MSIL2A_(?P<date>\d{8})T\d{6}_N(?P<baseline>\d{4})_R\d{3}_T(?P<tile>\d{2}[A-Z]{3})_\d{8}T\d{6}$")
# MTD band_id order of the 13 Sentinel-2 bands
BAND_IDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
NATIVE_10M = {"B2", "B3", "B4", "B8"}
UNUSABLE_SCL = {0, 1, 3, 8, 9, 10}
NODATA = 0  # DN 0 is no data


class Sen2Cor:
    name = "sen2cor"

    def discover(self, cfg: S2Input) -> list[Acquisition]:
        return discover_sen2cor(cfg)

    def nodata(self, cfg: S2Input, declared: float | None) -> float | None:
        return NODATA

    def mask_valid_values(self, cfg: S2Input) -> tuple[int, ...]:
        return scl_valid_values(cfg.sen2cor_snow_invalid)


def scl_valid_values(snow_invalid: bool) -> tuple[int, ...]:
    bad = UNUSABLE_SCL | ({11} if snow_invalid else set())
    return tuple(v for v in range(12) if v not in bad)


def _file_name(band: str) -> str:
    """B2 -> B02 (file names use two digits), B8A stays B8A."""
    return band if band.endswith("A") else f"B{int(band[1:]):02d}"


def parse_offsets(xml_text: str, where: str) -> tuple[float, dict[str, float]]:
    """(quantification value, {band: reflectance offset}) from MTD_MSIL2A.xml."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise InputError(f"{where}: MTD_MSIL2A.xml is not valid XML ({exc})") from None
    quant = None
    offsets: dict[str, float] = {}
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "BOA_QUANTIFICATION_VALUE" and el.text:
            quant = float(el.text)
        elif tag == "BOA_ADD_OFFSET" and el.text is not None:
            offsets[BAND_IDS[int(el.get("band_id", "0"))]] = float(el.text)
    if quant is None:
        raise InputError(f"{where}: MTD_MSIL2A.xml has no BOA_QUANTIFICATION_VALUE; is this a Sen2Cor L2A product?")
    return quant, {b: v / quant for b, v in offsets.items()}


def _listing(entry: Path, name: str) -> tuple[str, list[str], str]:
    """(GDAL prefix, relative member paths, metadata XML text) of a .SAFE folder or its zip."""
    safe = f"{name}.SAFE"
    if entry.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(entry) as z:
                names = z.namelist()
                mtd = f"{safe}/MTD_MSIL2A.xml"
                xml = z.read(mtd).decode() if mtd in names else ""
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"Sen2Cor product {str(entry)!r} is not a readable zip ({exc}); download it again") from None
        return f"/vsizip/{entry}/{safe}", [n[len(safe) + 1:] for n in names if n.startswith(safe + "/")], xml
    mtd_path = entry / "MTD_MSIL2A.xml"
    return str(entry), [str(p.relative_to(entry)) for p in entry.rglob("*") if p.is_file()], (
        mtd_path.read_text() if mtd_path.exists() else "")


def discover_sen2cor(cfg: S2Input) -> list[Acquisition]:
    root = cfg.path
    if not root.is_dir():
        raise InputMissingError(f"inputs.s2.path: folder {str(root)!r} does not exist (expected Sen2Cor .SAFE products or .zip)")
    found: dict[tuple[dt.date, str], Acquisition] = {}
    for entry in sorted(root.iterdir()):
        name = entry.name
        for suffix in (".zip", ".SAFE"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        m = PRODUCT.match(name)
        if not m:
            continue
        prefix, members, xml = _listing(entry, name)
        if not xml:
            raise InputMissingError(f"Sen2Cor product {str(entry)!r} has no MTD_MSIL2A.xml; is the download complete?")
        quant, offsets = parse_offsets(xml, str(entry))
        bands, missing = {}, []
        for band in cfg.bands:
            res = "10m" if band in NATIVE_10M else "20m"
            pat = re.compile(rf"^GRANULE/[^/]+/IMG_DATA/R{res}/[^/]+_{_file_name(band)}_{res}\.jp2$")
            hit = sorted(f for f in members if pat.match(f))
            if hit:
                bands[band] = f"{prefix}/{hit[0]}"
            else:
                missing.append(f"{_file_name(band)}_{res}.jp2")
        scl = sorted(f for f in members if re.match(r"^GRANULE/[^/]+/IMG_DATA/R20m/[^/]+_SCL_20m\.jp2$", f))
        if not scl:
            missing.append("SCL_20m.jp2")
        if missing:
            raise InputMissingError(f"Sen2Cor product {str(entry)!r} lacks {', '.join(missing)} under GRANULE/*/IMG_DATA; is the download complete?")
        date = dt.datetime.strptime(m["date"], "%Y%m%d").date()
        # reflectance = DN / quant + offset/quant: the scale is 1/quant; offsets are per band of this product
        if abs(quant - 1 / cfg.scale) > 1e-6:
            raise InputError(f"{entry}: BOA_QUANTIFICATION_VALUE {quant:g} differs from 1/inputs.s2.scale ({1 / cfg.scale:g}); "
                             f"set inputs.s2.scale: {1 / quant:g}")
        acq = Acquisition(date, bands, f"{prefix}/{scl[0]}", (), {b: offsets.get(b, 0.0) for b in cfg.bands})
        found[(date, entry.name)] = acq  # several products on a date (tiles, orbits) are merged when read
    if not found:
        raise InputMissingError(f"inputs.s2.path: no Sen2Cor L2A product in {str(root)!r} (names like "
                                "S2A_MSIL2A_20210105T063509_N0400_R134_T40KCB_20210105T084512.SAFE, or .zip)")
    return [found[k] for k in sorted(found)]
