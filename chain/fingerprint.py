"""Cheap fingerprints of input files: enough to notice that an input was replaced, without reading it."""

from __future__ import annotations

from pathlib import Path


def real_file(path: str) -> str:
    """The file on disk behind a GDAL path (the archive of a /vsizip/ or /vsitar/ path)."""
    for prefix, suffix in (("/vsizip/", ".zip"), ("/vsitar/", ".tar")):
        if path.startswith(prefix):
            inner = path[len(prefix):]
            cut = inner.lower().find(suffix)
            return inner[: cut + len(suffix)] if cut >= 0 else inner
    return path


def fingerprint_files(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) for each file: cheap, and enough to notice a replaced input."""
    out = []
    for p in sorted({real_file(p) for p in paths}):
        st = Path(p).stat()
        out.append((p, st.st_size, st.st_mtime_ns))
    return out
