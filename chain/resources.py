"""What a worker needs: memory sizes as users write them, and the memory one tile takes.

Kept free of dask imports: the config parses ``cluster.memory_limit`` with it on every command.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

# a dask worker process with numpy, rasterio and the model code imported, before any tile
WORKER_BASE_BYTES = 250 * 2**20
# peak of compute_features (series read, gap-filled, indices) per pixel and feature: the float32 block (4 B)
# plus the raw series (int16 dates x bands; ~1.6 B per feature for 36 dates gap-filled every 10 days, up to ~4.5 B
# when many dates are gap-filled onto few) plus small per-chunk buffers. Measured 6.0 B at 128 and 256 px tiles of
# a 36-date series (455 features) since the compiled gap-filling (it was 20.7 B with the numpy rule's temporaries);
# 12 B leaves room for the worst ratio and the model's working arrays
BYTES_PER_PIXEL_FEATURE = 12


def parse_bytes(text: str) -> int:
    """'4GiB', '500 MB', '2e9' -> bytes; ValueError with the accepted forms otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in _UNITS:
        raise ValueError("not a memory size; write it like 4GiB, 500MiB or 8GB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    n /= 1024
    if n < 1024:
        return f"{n:.1f} GiB"
    return f"{n:.1f} TiB"


def tile_bytes(height: int, width: int, n_features: int) -> int:
    """About what one worker holds at its peak while it computes one tile's features and classes."""
    return WORKER_BASE_BYTES + height * width * n_features * BYTES_PER_PIXEL_FEATURE


def check_tile_memory(cluster: object, tile_px: int, width: int, height: int, n_features: int) -> None:
    """A ConfigError when one tile cannot fit in a worker's memory limit (dask would kill the worker
    on every try, and the run would end in a cancelled-futures traceback)."""
    from chain.errors import ConfigError

    limit_text = getattr(cluster, "memory_limit", "auto")
    if limit_text == "auto" or (getattr(cluster, "type", "local") == "local" and not getattr(cluster, "processes", True)):
        return  # threads in this process: no per-worker limit is applied
    need = tile_bytes(min(tile_px, height), min(tile_px, width), n_features)
    limit = parse_bytes(limit_text)
    if need > 0.9 * limit:  # dask pauses a worker at 80 % and kills it at 95 %
        fits = int(((0.9 * limit - WORKER_BASE_BYTES) / (n_features * BYTES_PER_PIXEL_FEATURE)) ** 0.5) if limit > WORKER_BASE_BYTES / 0.9 else 0
        hint = f"lower grid.tile_size_px to {max(16, fits // 16 * 16)} or less, or " if fits >= 16 else ""
        raise ConfigError(
            f"cluster.memory_limit {limit_text} is too small for one tile: a {min(tile_px, width)} x {min(tile_px, height)} px tile of "
            f"{n_features} features needs about {human(need)} in a worker; {hint}raise cluster.memory_limit to {human(need / 0.9 * 1.1)}")


def allotted_cores() -> int:
    """The cores this process may use: the batch system's allocation (SLURM, PBS), the CPU affinity mask and the
    cgroup CPU quota (containers), whichever is smallest; never more than the machine has."""
    import math
    import os

    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    for var in ("SLURM_CPUS_PER_TASK", "PBS_NCPUS", "NCPUS"):
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            counts.append(int(v))
            break
    try:  # cgroup v2: "max 100000" (no quota) or "<quota> <period>"
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            counts.append(max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(counts))
