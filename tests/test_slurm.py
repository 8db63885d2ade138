"""The chain on a real single-node SLURM through dask-jobqueue (CI installs slurm-wlm and munge)."""

import numpy as np
import pytest
import rasterio

from chain import config
from chain.runner import run_pipeline
from tests.slurm_node import SlurmNode, available

pytestmark = pytest.mark.skipif(not available(), reason="needs root and Debian's slurm-wlm + munge (CI installs them)")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    node = SlurmNode(tmp_path_factory.mktemp("slurm")).start()
    yield node
    node.stop()


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_tiny_chain_runs_on_slurm_and_matches_local(slurm, make_config, caplog):
    cluster = {"type": "slurm", "n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB", "walltime": "00:15:00",
               "host": "127.0.0.1", "startup_timeout_s": 120, "queue": "debug"}
    cfg = config.load(make_config("slurm", cluster=cluster))
    with caplog.at_level("INFO", logger="chain.cluster"):
        reports = run_pipeline(cfg)
    assert {r.action for r in reports} == {"ran", "off"}
    # the per-tile work spreads over both worker jobs (4 tiles: 2 + 2, or 3 + 1)
    spread = [r.getMessage() for r in caplog.records if "tile(s) computed on" in r.getMessage()]
    assert spread and sum("on 2 worker(s)" in m for m in spread) >= len(spread) - 1, spread
    logs = list((cfg.workdir / "logs" / "jobs").glob("*.err"))
    assert logs, "no SLURM job log: the workers did not run as SLURM jobs"
    local = config.load(make_config("local"))
    run_pipeline(local)
    np.testing.assert_array_equal(_read(cfg.workdir / "final" / "Classif_Seed_0.tif"),
                                  _read(local.workdir / "final" / "Classif_Seed_0.tif"))
    # a second run on the cluster is a no-op, as locally
    assert {r.action for r in run_pipeline(cfg)} == {"skipped", "off"}


def test_wrong_partition_fails_with_a_clear_message(slurm, make_config):
    from chain.errors import ConfigError

    cluster = {"type": "slurm", "n_workers": 1, "host": "127.0.0.1", "startup_timeout_s": 8, "queue": "nosuchpartition"}
    cfg = config.load(make_config("badq", cluster=cluster))
    with pytest.raises(ConfigError, match="SLURM refuses the worker jobs: invalid partition"):
        run_pipeline(cfg)


def test_workers_that_never_start_time_out_clearly(slurm, make_config):
    from chain.errors import StepError

    # a job held until later stays pending: no worker within the timeout
    cluster = {"type": "slurm", "n_workers": 1, "host": "127.0.0.1", "startup_timeout_s": 6, "queue": "debug",
               "job_extra_directives": ["--begin=now+1hour"]}
    cfg = config.load(make_config("pending", cluster=cluster))
    with pytest.raises(StepError, match="no dask worker started on slurm within 6 s"):
        run_pipeline(cfg)


def test_worker_jobs_keep_glibcs_adaptive_malloc_and_dasks_other_settings(slurm, make_config, monkeypatch):
    # the job script's export reaches the worker's nanny (chain.cluster.NO_TRIM): no MALLOC_TRIM_THRESHOLD_, and
    # dask's one-thread settings for numpy's libraries still merged in
    from tests.cluster_env import workers_environ

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    cluster = {"type": "slurm", "n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB", "walltime": "00:05:00",
               "host": "127.0.0.1", "startup_timeout_s": 120, "queue": "debug"}
    cfg = config.load(make_config("slurm_env", cluster=cluster))
    envs = workers_environ(cfg.cluster, cfg.workdir)
    assert envs == [{"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}]
