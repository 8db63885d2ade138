"""The PBS path (dask-jobqueue's PBSCluster) end to end, through a minimal stand-in for PBS's commands.

Debian ships no PBS server (Torque and OpenPBS are not packaged), so this test puts `qsub` / `qdel`
scripts on PATH that run each job script as a local background process, the way a one-node PBS
would. What it checks is ours: the PBS job script chain asks for (queue, account, walltime,
resources, extra directives), that workers started from it join the scheduler on 127.0.0.1, and
that the map is the local one. The real SLURM test (tests/test_slurm.py) covers a real scheduler.
"""

import os
import stat
import sys

import numpy as np
import rasterio

from chain import config
from chain.runner import run_pipeline

QSUB = """#!/usr/bin/env bash
# qsub SCRIPT: record it, run it in the background, print a PBS-style job id
set -e
cp "$1" "{spool}/job_$$.sh"
setsid nohup bash "{spool}/job_$$.sh" > "{spool}/job_$$.out" 2>&1 &  # qsub spools a copy, as PBS does
echo "$!.stand-in-pbs"
"""
QDEL = """#!/usr/bin/env bash
for id in "$@"; do kill -- "-${{id%%.*}}" 2>/dev/null || kill "${{id%%.*}}" 2>/dev/null || true; done
"""


def _install(bin_dir, spool):
    bin_dir.mkdir()
    for name, text in (("qsub", QSUB), ("qdel", QDEL)):
        p = bin_dir / name
        p.write_text(text.format(spool=spool))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)


def test_chain_runs_through_pbs_job_scripts(make_config, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    _install(tmp_path / "bin", spool)
    # the job scripts call the dask worker with this interpreter's environment
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    cluster = {"type": "pbs", "n_workers": 1, "threads_per_worker": 2, "memory_limit": "2GiB", "walltime": "00:20:00",
               "queue": "workq", "account": "landcover", "host": "127.0.0.1", "startup_timeout_s": 120,
               "job_extra_directives": ["-l place=free"]}
    cfg = config.load(make_config("pbs", cluster=cluster))
    run_pipeline(cfg)
    scripts = sorted(spool.glob("job_*.sh"))
    assert scripts, "no job submitted through qsub"
    text = scripts[0].read_text()
    for line in ("#PBS -q workq", "#PBS -A landcover", "#PBS -l walltime=00:20:00", "#PBS -l place=free", "#PBS -N chain-worker"):
        assert line in text, text
    assert "ncpus=2" in text and "mem=" in text
    local = config.load(make_config("local"))
    run_pipeline(local)
    with rasterio.open(cfg.workdir / "final" / "Classif_Seed_0.tif") as a, \
         rasterio.open(local.workdir / "final" / "Classif_Seed_0.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
