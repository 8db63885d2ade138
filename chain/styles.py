"""What travels with a class map: QGIS style (.qml), nomenclature CSV, GDAL category names."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from chain.atomic import write_text


def _hex(rgb: list[int] | tuple[int, ...]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def qml(classes: dict[int, dict]) -> str:
    """A QGIS paletted-renderer style; QGIS loads ``<map>.qml`` next to ``<map>.tif`` by itself."""
    entries = "\n".join(
        f'        <paletteEntry value="{c}" color="{_hex(v["color"])}" alpha="255" label={quoteattr(str(v["name"]))}/>'
        for c, v in sorted(classes.items())
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="AllStyleCategories">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{entries}
      </colorPalette>
      <colorramp type="randomcolors" name="[source]"/>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"
                   grayscaleMode="0" invertColors="0"/>
    <rasterresampler maxOversample="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def nomenclature_csv(classes: dict[int, dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["code", "name", "red", "green", "blue", "hex"])
    for c, v in sorted(classes.items()):
        w.writerow([c, v["name"], *v["color"][:3], _hex(v["color"])])
    return buf.getvalue()


def category_names_aux(classes: dict[int, dict]) -> str:
    """A GDAL PAM side-car giving the band its category names (value i -> i-th name)."""
    top = max(classes) if classes else 0
    names = "".join(f"<Category>{escape(str(classes[i]['name'])) if i in classes else ''}</Category>" for i in range(top + 1))
    return (f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>{names}</CategoryNames>\n'
            f"  </PAMRasterBand>\n</PAMDataset>\n")


def write_class_map_companions(map_path: Path, classes: dict[int, dict]) -> list[Path]:
    """Write ``<map>.qml``, ``<map>.tif.aux.xml`` (category names) and return their paths."""
    qml_path = map_path.with_suffix(".qml")
    aux_path = map_path.with_name(map_path.name + ".aux.xml")
    write_text(qml_path, qml(classes))
    write_text(aux_path, category_names_aux(classes))
    return [qml_path, aux_path]
