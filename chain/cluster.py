"""The dask engine: a LocalCluster by default; tiles are mapped over it with per-tile resume."""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import rasterio
from dask.distributed import Client, LocalCluster, as_completed

from chain.config import ClusterConfig
from chain.grid import Tile
from chain.log import Progress

log = logging.getLogger(__name__)


def open_client(cfg: ClusterConfig) -> Client:
    cluster = LocalCluster(
        n_workers=cfg.n_workers,
        threads_per_worker=cfg.threads_per_worker,
        memory_limit=cfg.memory_limit,
        processes=cfg.processes,
        dashboard_address=":0",  # a free port: never clash with another cluster
        # workers in other processes talk over loopback TCP; threads in this process use in-process comms
        **({"host": "127.0.0.1"} if cfg.processes else {}),
    )
    client = Client(cluster)
    log.debug("dask cluster: %d worker(s) x %d thread(s), %s each", cfg.n_workers, cfg.threads_per_worker, cfg.memory_limit)
    return client


def _with_gdal_env(fn: Callable[..., Any], gdal_cache_mb: int, tile: Tile, *args: Any) -> Any:
    # GDAL's block cache dominates memory on wide stacks: bound it in every worker
    with rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb * 1024 * 1024):
        return fn(tile, *args)


def map_tiles(
    client: Client,
    cfg: ClusterConfig,
    fn: Callable[..., Any],
    tiles: Sequence[Tile],
    *args: Any,
    is_done: Callable[[Tile], bool],
    key: str,
    desc: str,
) -> dict[str, int]:
    """Run ``fn(tile, *args)`` for each tile not ``is_done``; every tile writes its own atomic outputs.

    Dask keys derive from ``key`` and the tile id, so they are deterministic. Failed tasks are retried
    ``cfg.retries`` times; the first error that persists is raised after the other tasks are cancelled.
    """
    todo = [t for t in tiles if not is_done(t)]
    counts = {"tiles": len(tiles), "done_before": len(tiles) - len(todo), "computed": 0}
    if counts["done_before"]:
        log.info("%s: %d of %d tile(s) already done, resuming", desc, counts["done_before"], len(tiles))
    if not todo:
        return counts
    futures = [
        client.submit(_with_gdal_env, fn, cfg.gdal_cache_mb, t, *args, key=f"{key}-{t.id}", retries=cfg.retries, pure=False)
        for t in todo
    ]
    try:
        with Progress(len(todo), desc, log) as bar:
            for fut in as_completed(futures):
                fut.result()
                counts["computed"] += 1
                bar.update()
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
    return counts
