"""Benchmark of the classify step: pixels/s and peak memory vs scene size and number of workers.

Generates one demo scene of BASE px (seeded), then makes larger scenes by repeating it K x K times
through GDAL VRT mosaics (same dates, bands and file layout, no extra disk), trains once per scene on
the reference polygons (which cover the first block only), and times `classify` alone.
Peak RSS is the sum over the process and its children (the dask workers), sampled every 50 ms.

    python bench/classify.py                 # 1k, 2k, 4k px; 1 and 2 workers
    python bench/classify.py --base 512 --factors 1 2 --workers 1
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from pathlib import Path

import psutil
import rasterio
import yaml

from chain import config
from chain.demo import generate
from chain.runner import run_pipeline


def vrt_mosaic(src: Path, dst: Path, k: int = 1, side: int | None = None) -> Path:
    """A VRT of ``src`` repeated k x k times side by side, or (``side``) its upper-left side x side crop.

    Every band is kept, so the same helper serves single-band series files and multi-band stacks.
    """
    with rasterio.open(src) as ds:
        w, h, t, n = ds.width, ds.height, ds.transform, ds.count
        dtype = {"int16": "Int16", "uint8": "Byte", "uint16": "UInt16", "float32": "Float32"}[ds.dtypes[0]]
        nodata = ds.nodata
        wkt = ds.crs.to_wkt()
    sw, sh = (side, side) if side else (w, h)  # source rectangle copied each time
    places = [(0, 0)] if side else [(j * w, i * h) for i in range(k) for j in range(k)]
    nd = f"<NoDataValue>{nodata:g}</NoDataValue>" if nodata is not None else ""
    bands = "".join(
        f"<VRTRasterBand dataType=\"{dtype}\" band=\"{b}\">{nd}" + "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{src}</SourceFilename><SourceBand>{b}</SourceBand>"
            f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{sw}\" ySize=\"{sh}\"/>"
            f"<DstRect xOff=\"{x}\" yOff=\"{y}\" xSize=\"{sw}\" ySize=\"{sh}\"/></SimpleSource>" for x, y in places)
        + "</VRTRasterBand>" for b in range(1, n + 1))
    width, height = (side, side) if side else (w * k, h * k)
    dst.write_text(f"<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\"><SRS>{wkt}</SRS>"
                   f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>{bands}</VRTDataset>")
    return dst


def scene_of(base: Path, out: Path, k: int) -> Path:
    if k == 1:
        return base
    for f in sorted(base.glob("s2/*/*.tif")):
        d = out / "s2" / f.parent.name
        d.mkdir(parents=True, exist_ok=True)
        vrt_mosaic(f, d / (f.stem + ".vrt"), k)
    (out / "reference.gpkg").write_bytes((base / "reference.gpkg").read_bytes())
    return out


class PeakRSS:
    def __init__(self) -> None:
        self.peak = 0
        self.main_peak = 0  # this process alone (the total includes its worker processes)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            try:
                self.main_peak = max(self.main_peak, me.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=int, default=1024, help="side of the generated scene, px")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4], help="scene sides as multiples of --base")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dates", type=int, default=8)
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="chain-bench-"))
    t0 = time.time()
    base = generate(root / "base", args.base, args.dates, max(30, args.base ** 2 // 1000), seed=1)
    print(f"scene {args.base} px, {args.dates} dates generated in {time.time() - t0:.0f} s ({root})", flush=True)
    rows = []
    print(f"{'size':>10} {'workers':>7} {'pixels':>12} {'seconds':>8} {'Mpx/s':>7} {'peak RSS MiB':>13}", flush=True)
    for k in args.factors:
        scene = scene_of(base, root / f"x{k}", k)
        for n in args.workers:
            cfg_path = root / f"x{k}_w{n}.yaml"
            cfg_path.write_text(yaml.safe_dump({
                "workdir": str(root / f"work_x{k}_w{n}"), "seed": 0,
                "inputs": {"s2": {"path": str(scene / "s2")}, "reference": {"path": str(scene / "reference.gpkg")}},
                "grid": {"tile_size_px": args.tile}, "gapfill": {"interval_days": 30},
                "sample": {"max_pixels_per_class": 3000}, "model": {"n_estimators": args.trees},
                "cluster": {"n_workers": n, "threads_per_worker": 1, "memory_limit": "4GiB", "processes": True},
            }))
            cfg = config.load(cfg_path)
            run_pipeline(cfg, to_step="compare_models")
            with PeakRSS() as rss:
                t = time.time()
                run_pipeline(cfg, from_step="classify", to_step="classify")
                secs = time.time() - t
            px = (args.base * k) ** 2
            rows.append({"side_px": args.base * k, "workers": n, "pixels": px, "seconds": secs,
                         "mpx_per_s": px / secs / 1e6, "peak_rss_mib": rss.peak / 2**20})
            r = rows[-1]
            print(f"{r['side_px']:>9}² {n:>7} {px:>12,} {secs:>8.1f} {r['mpx_per_s']:>7.3f} {r['peak_rss_mib']:>13.0f}", flush=True)
    for n in args.workers:
        sel = [r for r in rows if r["workers"] == n]
        if len(sel) > 1:
            ratio = sel[-1]["peak_rss_mib"] / sel[0]["peak_rss_mib"]
            print(f"workers={n}: peak RSS at {sel[-1]['side_px']}² / at {sel[0]['side_px']}² = {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.uname()._asdict(), "cpus": psutil.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
