"""Input sources: one module per kind (Sentinel-2 and its product formats, Landsat, Sentinel-1, SPOT, a
feature stack), each a ``chain.sources.base.Source`` registered under the ``chain.sources`` entry points."""
