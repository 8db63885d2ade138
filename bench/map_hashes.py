"""SHA-256 of the map pixels of every demo config: the behaviour check for refactors.

    python bench/map_hashes.py [--out DIR] [--json FILE] [configs/demo.yaml ...]

Runs each demo config (default: every ``configs/demo*.yaml``) into its own work folder under
``--out`` and prints, per config, the SHA-256 of the pixel data (not the file bytes: those carry
timestamps and GDAL versions) of ``final/Classif_Seed_0.tif``, its OA and the run's wall time.
Compare two tables (before/after a change) with ``--compare old.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]


def pixel_hash(path: Path) -> str:
    with rasterio.open(path) as src:
        arr = np.ascontiguousarray(src.read())
    h = hashlib.sha256()
    h.update(str(arr.shape).encode() + str(arr.dtype).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def run_one(cfg: Path, out: Path) -> dict:
    workdir = out / cfg.stem
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "chain.cli", "run", str(cfg), "-q", "--set", f"workdir={workdir}"],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.time() - t0
    row = {"config": cfg.name, "seconds": round(seconds, 1), "rc": proc.returncode}
    final = workdir / "final"
    if proc.returncode != 0 or not (final / "Classif_Seed_0.tif").exists():
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return row
    row["sha256"] = pixel_hash(final / "Classif_Seed_0.tif")
    row["oa"] = json.loads((final / "metrics.json").read_text(), parse_constant=lambda c: None)["summary"]["oa"]["mean"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "demo" / "hashes")
    ap.add_argument("--json", type=Path, help="write the table here")
    ap.add_argument("--compare", type=Path, help="a table written earlier: say which maps differ")
    args = ap.parse_args()
    configs = [c.resolve() for c in args.configs] or sorted((ROOT / "configs").glob("demo*.yaml"))
    rows = []
    print(f"{'config':<28}{'s':>8}  {'OA':>6}  sha256 of Classif_Seed_0.tif pixels", flush=True)
    for cfg in configs:
        row = run_one(cfg, args.out)
        rows.append(row)
        oa = f"{row['oa']:.3f}" if "oa" in row else "-"
        print(f"{row['config']:<28}{row['seconds']:>8.1f}  {oa:>6}  {row.get('sha256') or row.get('error')}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    status = 0
    if args.compare:
        old = {r["config"]: r for r in json.loads(args.compare.read_text())}
        print("\ncompared with", args.compare)
        for r in rows:
            o = old.get(r["config"])
            same = o is not None and o.get("sha256") == r.get("sha256")
            status |= not same
            print(f"  {r['config']:<28}{'identical' if same else 'DIFFERENT'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
