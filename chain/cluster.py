"""The dask engine: a LocalCluster by default; tiles are mapped over it with per-tile resume."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import dask
import rasterio
from dask.distributed import Client, LocalCluster, as_completed

from chain import scratch
from chain.config import ClusterConfig
from chain.errors import ChainError, ConfigError, StepError
from chain.log import Progress


class Unit(Protocol):
    """What ``map_tiles`` maps over: a grid tile, or any unit of work with an ``id`` (a file to copy)."""

    @property
    def id(self) -> str: ...


U = TypeVar("U", bound=Unit)

log = logging.getLogger(__name__)


def quiet_workers() -> None:
    """Worker logs stay out of the user's terminal unless they asked for detail (-v): a failed tile reaches the
    client as its error, which the CLI prints once; dask's "Compute Failed" dumps and cancellation warnings of
    the other tiles would bury it. Worker processes read these levels from the environment at start."""
    import logging
    import os

    if any(h.level <= logging.DEBUG for h in logging.getLogger("chain").handlers if getattr(h, "_chain_console", False)):
        return  # -v: the user asked for everything
    os.environ["CHAIN_QUIET_WORKERS"] = "1"  # read by each task in the workers (_quiet_here), inherited by their processes
    _quiet_here()


QUIET = {"distributed.worker": "CRITICAL", "distributed.worker.state_machine": "CRITICAL", "distributed.nanny": "ERROR",
         "distributed.scheduler": "ERROR", "distributed.core": "ERROR"}


def _quiet_here() -> None:
    import logging

    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)


# dask's nanny starts each worker with MALLOC_TRIM_THRESHOLD_=65536, to hand freed memory back to the system at once.
# Setting it also freezes glibc's mmap threshold at 128 KiB: every array above that (a band's window, a tile's
# features) then comes in fresh pages, faulted in again for every tile, which costs (a 512² classify tile of the
# time-series bench, one process: 3.7-4.6 s with the variable, 2.0-2.9 s without). Workers keep glibc's adaptive
# rule: freed blocks are reused by the next tile, and what a tile holds is bounded by the chain (tiles, GDAL cache).
NO_TRIM = {"MALLOC_TRIM_THRESHOLD_": None}  # None: the nanny does not set it (the user's own environment still applies)
# the same for a worker job, whose nanny reads its own dask config: a Python literal dask parses from the environment
# and merges into its defaults (the key's case kept, unlike a DASK_..._MALLOC_TRIM_THRESHOLD_ variable's)
NO_TRIM_EXPORT = """export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{"MALLOC_TRIM_THRESHOLD_": None}'"""


def open_client(cfg: ClusterConfig, workdir: Path | None = None) -> Client:
    quiet_workers()
    if cfg.type in ("slurm", "pbs"):
        return _jobqueue_client(cfg, workdir)
    with _workers_ignore_ctrl_c(), dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in NO_TRIM.items()}):
        cluster = LocalCluster(**_local_kwargs(cfg))
    client = Client(cluster)
    log.debug("dask cluster: %d worker(s) x %d thread(s), %s each", cfg.n_workers, cfg.threads_per_worker, cfg.memory_limit)
    return client


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Worker processes started in here ignore SIGINT (they inherit the disposition): a terminal's Ctrl-C reaches
    the whole process group, and each worker would print its own traceback. This process stops them itself."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _local_kwargs(cfg: ClusterConfig) -> dict[str, Any]:
    return dict(
        n_workers=cfg.n_workers,
        threads_per_worker=cfg.threads_per_worker,
        # threads in this process share its memory with everything else it holds (a trained network,
        # the caller's data): a per-worker limit there would pause the worker, and the run with it
        memory_limit=cfg.memory_limit if cfg.processes else 0,
        processes=cfg.processes,
        dashboard_address=":0",  # a free port: never clash with another cluster
        # workers in other processes talk over loopback TCP; threads in this process use in-process comms
        **({"host": "127.0.0.1"} if cfg.processes else {}),
    )


def _jobqueue_client(cfg: ClusterConfig, workdir: Path | None) -> Client:
    try:
        import dask_jobqueue
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("cluster.type slurm/pbs needs dask-jobqueue: pip install dask-jobqueue") from None
    cls = dask_jobqueue.SLURMCluster if cfg.type == "slurm" else dask_jobqueue.PBSCluster
    command = "sbatch" if cfg.type == "slurm" else "qsub"
    if shutil.which(command) is None:
        raise ConfigError(f"cluster.type is {cfg.type!r} but `{command}` is not on PATH; run from a login node of the cluster, or use type: local")
    logs = Path(cfg.log_directory) if cfg.log_directory else (workdir / "logs" / "jobs" if workdir else None)
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {
        "queue": cfg.queue, "account": cfg.account, "cores": cfg.threads_per_worker, "processes": 1,
        "memory": cfg.memory_limit,
        "walltime": cfg.walltime, "job_extra_directives": list(cfg.job_extra_directives),
        "job_script_prologue": [*cfg.job_script_prologue, NO_TRIM_EXPORT],
        "interface": cfg.interface,
        "log_directory": str(logs) if logs else None, "job_name": "chain-worker",
    }
    if cfg.host:
        kwargs["scheduler_options"] = {"host": cfg.host, "dashboard_address": ":0"}
        kwargs["worker_extra_args"] = ["--host", cfg.host]
    else:
        kwargs["scheduler_options"] = {"dashboard_address": ":0"}
    cluster = cls(**{k: v for k, v in kwargs.items() if v is not None})
    script = cluster.job_script()
    log.debug("job script:\n%s", script)
    if cfg.type == "slurm":
        _check_slurm_script(cluster, script)
    log.info("submitting %d %s job(s) for dask workers", cfg.n_workers, cfg.type)
    cluster.scale(jobs=cfg.n_workers)
    client = Client(cluster)
    try:
        client.wait_for_workers(1, timeout=cfg.startup_timeout_s)
    except Exception:
        _close_quietly(client, cluster)
        raise StepError(
            f"no dask worker started on {cfg.type} within {cfg.startup_timeout_s} s (cluster.startup_timeout_s); "
            f"check the queue (squeue/qstat) and the job logs in {logs}"
        ) from None
    return client


def _check_slurm_script(cluster: Any, script: str) -> None:
    """`sbatch --test-only`: a wrong partition, account or limit is reported before anything is queued."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as fh:
        fh.write(script)
    try:
        res = subprocess.run(["sbatch", "--test-only", fh.name], capture_output=True, text=True, timeout=60)
    finally:
        Path(fh.name).unlink(missing_ok=True)
    if res.returncode != 0:
        _close_quietly(None, cluster)
        detail = " ".join(line.removeprefix("sbatch: error: ") for line in res.stderr.strip().splitlines())
        raise ConfigError(f"SLURM refuses the worker jobs: {detail}; check cluster.queue, cluster.account, "
                          "cluster.walltime, cluster.memory_limit and cluster.job_extra_directives")


def _close_quietly(client: Any, cluster: Any) -> None:
    for obj in (client, cluster):
        if obj is not None:
            try:
                obj.close()
            except Exception:  # closing a cluster that never started can raise; nothing to keep
                pass


def _with_gdal_env(fn: Callable[..., Any], gdal_cache_mb: int, tile: Unit, *args: Any) -> Any:
    # GDAL's block cache dominates memory on wide stacks: bound it in every worker
    import os

    if os.environ.get("CHAIN_QUIET_WORKERS"):
        _quiet_here()
    failed: ChainError | None = None
    try:
        with rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb * 1024 * 1024):
            return fn(tile, *args)
    except ChainError as exc:
        # a user's error must reach the client as itself: the exceptions it was raised from (rasterio's
        # CPLE_* errors) cannot be unpickled, and dask would hand over Exception(repr(...)) instead
        exc.__context__ = exc.__cause__ = None
        failed = exc
    raise failed  # outside the handler: no new context is attached


def _log_spread(client: Client, futures: list[Any], desc: str, counts: dict[str, Any], unit: str = "tile") -> None:
    """Which worker computed how many tiles (where each result lives): the work must spread over the workers
    (a cluster's jobs included); a line in the log, and ``counts["workers"]``."""
    try:
        where = client.who_has(futures)
    except Exception:  # noqa: BLE001 - a report only: never fail a finished step for it
        return
    spread = Counter(addrs[0] for addrs in where.values() if addrs)
    counts["workers"] = dict(spread)
    if len(futures) > 1:
        log.info("%s: %d %s(s) computed on %d worker(s): %s", desc, len(futures), unit, len(spread),
                 ", ".join(str(n) for n in sorted(spread.values(), reverse=True)))


def map_tiles(
    client: Client,
    cfg: ClusterConfig,
    fn: Callable[..., Any],
    tiles: Sequence[U],
    *args: Any,
    is_done: Callable[[U], bool],
    key: str,
    desc: str,
    unit: str = "tile",
) -> dict[str, Any]:
    """Run ``fn(tile, *args)`` for each tile not ``is_done``; every tile writes its own atomic outputs.

    Dask keys derive from ``key`` and the tile id, so they are deterministic. Failed tasks are retried
    ``cfg.retries`` times; the first error that persists is raised after the other tasks are cancelled.
    """
    todo = [t for t in tiles if not is_done(t)]
    counts: dict[str, Any] = {"tiles": len(tiles), "done_before": len(tiles) - len(todo), "computed": 0}
    if counts["done_before"]:
        log.info("%s: %d of %d tile(s) already done, resuming", desc, counts["done_before"], len(tiles))
    if not todo:
        return counts
    futures = [
        client.submit(_with_gdal_env, fn, cfg.gdal_cache_mb, t, *args, key=f"{key}-{t.id}", retries=cfg.retries, pure=False)
        for t in todo
    ]
    try:
        with Progress(len(todo), desc, log, unit=unit) as bar:
            for fut in as_completed(futures):
                fut.result()
                counts["computed"] += 1
                bar.update()
        _log_spread(client, futures, desc, counts, unit)
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
        _release_scratch(client)
    return counts


def _release_scratch(client: Client) -> None:
    """The workers' pooled tile buffers (chain.scratch), and this process's, dropped at the end of a tiled step: the
    next step's tiles have other arrays."""
    scratch.release()
    with contextlib.suppress(Exception):  # a worker lost on the way: nothing to release there
        client.run(scratch.release)
