"""chain: an operational land-cover mapping chain.

Satellite time series + reference polygons -> land-cover GeoTIFF maps with a validation report.
The engine lives here; the processing steps live in the top-level ``steps`` package.
"""

__version__ = "0.1.0"
