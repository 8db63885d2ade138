"""The built-in demo scene: a seeded synthetic year of imagery over fields, written as real products.

``scene`` draws the landscape and its phenology and writes the truth and the reference polygons;
one module per product writes a source's files from it (``s2`` the Sentinel-2 series in each
layout, ``s1``, ``spot``, ``landsat``); ``options`` is the ``demo:`` config section. The package
itself imports nothing heavy: ``from chain.demo import generate`` loads the writers when called.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    if name == "generate":
        from chain.demo import scene

        return scene.generate
    raise AttributeError(f"module 'chain.demo' has no attribute {name!r}")


def ensure(reference_path: Path, **options: Any) -> bool:
    """Generate the demo scene beside ``reference_path`` (``<folder>/reference.gpkg``, with ``<folder>/s2``
    and the other products' folders) when it is missing, or when it was generated with other options (``demo.json``
    records them: a scene is not trusted because it exists); True when it was generated. ``options``: as
    ``scene.generate`` takes them (the ``demo:`` section). Checking costs no import of the writers."""
    out = reference_path.parent
    if reference_path.name != "reference.gpkg":
        from chain.errors import ConfigError

        raise ConfigError("demo: inputs.reference.path must be '<folder>/reference.gpkg', with the image inputs in "
                          "'<folder>/s2', '<folder>/s1', '<folder>/spot' and '<folder>/landsat', for the demo generator")
    o = options
    wanted = [out / "s2"] + [out / n for n in ("s1", "landsat") if o.get(n)] + ([out / "spot"] if o.get("spot", "none") != "none" else [])
    stamp = out / STAMP
    want = json.dumps(options, sort_keys=True, default=str)
    present = reference_path.exists() and all(p.is_dir() and any(p.iterdir()) for p in wanted)
    if present and stamp.exists() and stamp.read_text() == want:
        return False
    from chain.demo.scene import generate

    if reference_path.exists():  # a scene of other (or unrecorded) options: what the generator writes goes first
        import shutil

        log.info("the demo scene in %s was generated with other options: generating it again", out)
        for name in GENERATED:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    log.info("generating the demo scene (%d px, %d dates) in %s", o.get("size_px", 500), o.get("n_dates", 24), out)
    generate(out, **options)
    from chain.atomic import write_text

    write_text(stamp, want)
    return True


STAMP = "demo.json"  # the options the scene in a folder was generated with
GENERATED = ("s2", "s1", "spot", "landsat", "reference.gpkg", "truth.tif", "reference_truth.gpkg", "changes.csv")  # what scene.generate writes
