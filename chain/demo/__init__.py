"""The built-in demo scene: a seeded synthetic year of imagery over fields, written as real products.

``scene`` draws the landscape and its phenology and writes the truth and the reference polygons;
one module per product writes a source's files from it (``s2`` the Sentinel-2 series in each
layout, ``s1``, ``spot``, ``landsat``); ``options`` is the ``demo:`` config section. The package
itself imports nothing heavy: ``from chain.demo import generate`` loads the writers when called.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("generate", "ensure"):
        from chain.demo import scene

        return getattr(scene, name)
    raise AttributeError(f"module 'chain.demo' has no attribute {name!r}")
