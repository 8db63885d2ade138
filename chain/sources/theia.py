"""THEIA / MAJA Sentinel-2 L2A products, as folders or as the .zip archives they are delivered in.

A product is named ``SENTINEL2{A,B,C}_<YYYYMMDD>-<HHMMSS>-<ms>_L2A_T<tile>_<C|D>_V<x>-<y>`` and holds
``<product>_FRE_B<n>.tif`` (or ``_SRE_``): int16 reflectance x 10000, -10000 = no data, 10 m bands
B2 B3 B4 B8 and 20 m bands B5 B6 B7 B8A B11 B12, plus ``MASKS/<product>_<MASK>_R1.tif`` (10 m) and
``_R2.tif`` (20 m): CLM (clouds and their shadows, a bit field: any bit set means cloud or shadow),
EDG (edges: no data), SAT (saturation, one bit per band). Zips are read in place through GDAL's
/vsizip/, never unpacked. (``inputs.s2.format: theia``)
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path

from chain.errors import InputError, InputMissingError
from chain.sources.optical import Acquisition
from chain.sources.sentinel2 import S2Input

NODATA = -10000  # THEIA's no-data reflectance, whether or not the files declare it
CLEAR = (0,)  # CLM: any bit set means cloud or shadow
PRODUCT = re.compile(r"^SENTINEL2[A-D]_(?P<date>\d{8})-(?P<time>\d{6})-\d{3}_L2A_T(?P<tile>\d{2}[A-Z]{3})_[A-Z]_V\d+-\d+$")


def _members(entry: Path, name: str) -> tuple[str, set[str]]:
    """(GDAL prefix of the product's files, relative paths of its files)."""
    if entry.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(entry) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"THEIA product {str(entry)!r} is not a readable zip ({exc}); download it again") from None
        # the archive holds the product folder
        rel = {n[len(name) + 1:] for n in names if n.startswith(name + "/")}
        return f"/vsizip/{entry}/{name}", rel
    rel = {str(p.relative_to(entry)) for p in entry.rglob("*") if p.is_file()}
    return str(entry), rel


class Theia:
    name = "theia"

    def discover(self, cfg: S2Input) -> list[Acquisition]:
        return discover_theia(cfg)

    def nodata(self, cfg: S2Input, declared: float | None) -> float | None:
        return declared if declared is not None else NODATA

    def mask_valid_values(self, cfg: S2Input) -> tuple[int, ...]:
        return CLEAR


def discover_theia(cfg: S2Input) -> list[Acquisition]:
    root = cfg.path
    if not root.is_dir():
        raise InputMissingError(f"inputs.s2.path: folder {str(root)!r} does not exist (expected THEIA L2A products, folders or .zip)")
    found: dict[tuple[dt.date, str], Acquisition] = {}
    for entry in sorted(root.iterdir()):
        name = entry.name[:-4] if entry.suffix.lower() == ".zip" else entry.name
        m = PRODUCT.match(name)
        if not m or not (entry.is_dir() or entry.suffix.lower() == ".zip"):
            continue
        date = dt.datetime.strptime(m["date"], "%Y%m%d").date()
        prefix, rel = _members(entry, name)
        wanted = {b: f"{name}_{cfg.theia_reflectance}_{b}.tif" for b in cfg.bands}
        masks = {k: f"MASKS/{name}_{k}.tif" for k in ("CLM_R1", "EDG_R1", "SAT_R1", "SAT_R2")}
        missing = [f for f in [*wanted.values(), *masks.values()] if f not in rel]
        if missing:
            raise InputMissingError(
                f"THEIA product {str(entry)!r} lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}; "
                f"is the download complete? (bands from inputs.s2.bands, reflectance {cfg.theia_reflectance})"
            )
        acq = Acquisition(date, {b: f"{prefix}/{f}" for b, f in wanted.items()}, f"{prefix}/{masks['CLM_R1']}",
                          tuple(f"{prefix}/{masks[k]}" for k in ("EDG_R1", "SAT_R1", "SAT_R2")))
        found[(date, entry.name)] = acq  # several products on a date (tiles, orbits) are merged when read
    if not found:
        raise InputMissingError(
            f"inputs.s2.path: no THEIA L2A product in {str(root)!r} (names like "
            "SENTINEL2A_20210105-071856-461_L2A_T40KCB_C_V2-2, as folders or .zip)"
        )
    return [found[k] for k in sorted(found)]
