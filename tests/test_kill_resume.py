"""A real kill: `chain run` is SIGKILLed in the middle of classification, then re-run with the same command."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import rasterio

from chain.demo import generate
from tests.conftest import tiny_config


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_killed_run_resumes_per_tile_and_matches_uninterrupted(tmp_path):
    scene = generate(tmp_path / "scene_src", size_px=96, n_dates=6, n_fields=30, seed=11)
    sections = {"grid": {"tile_size_px": 16}, "cluster": {"n_workers": 1, "threads_per_worker": 1, "processes": False}}
    killed_cfg = tiny_config(scene, tmp_path / "killed", **sections)
    whole_cfg = tiny_config(scene, tmp_path / "whole", **sections)
    cmd = [sys.executable, "-m", "chain.cli", "run", "-q"]

    proc = subprocess.Popen([*cmd, str(killed_cfg)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tiles_dir = killed_cfg.parent / "work" / "classify" / "run_0"
    deadline = time.time() + 120
    while time.time() < deadline and not (tiles_dir.exists() and any(tiles_dir.glob("*_class.tif"))):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(tiles_dir.glob("*_class.tif")))
    ledger = json.loads((killed_cfg.parent / "work" / ".chain" / "ledger" / "classify.json").read_text())
    assert ledger["status"] == "started"
    assert 0 < done_before < 36

    out = subprocess.run([*cmd, str(killed_cfg)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"classify\s+ran", out.stdout) and "(interrupted, resuming)" in out.stdout
    assert re.search(r"train\s+skipped", out.stdout)
    assert not list((killed_cfg.parent / "work").rglob(".*.tmp-*"))

    subprocess.run([*cmd, str(whole_cfg)], check=True, capture_output=True, timeout=300)
    for name in ("Classif_Seed_0.tif", "Confidence_Seed_0.tif", "PixelsValidity.tif"):
        np.testing.assert_array_equal(_read(killed_cfg.parent / "work" / "final" / name),
                                      _read(whole_cfg.parent / "work" / "final" / name))
