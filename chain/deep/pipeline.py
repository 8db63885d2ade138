"""Patch networks fed from device memory: each tile uploaded once, patches cut and normalised on the device.

The CPU's share of a tile is what only it can do: read the sources and compute the grid features
(``TileBlock``), then hand the arrays over (pinned memory and an asynchronous copy on CUDA). On the
device, the tile's arrays (plus halo) stay resident; the patches of a batch are strided views of them
indexed by the pixels' corners (``Tensor.unfold``: no copy until the batch is gathered); the
normalisation is the network's fixed first layer (``chain.deep.export.Served``, the same module that
``model.pt2`` exports); on CUDA the forward runs under bf16 (fp16 where bf16 is missing) autocast and
the batches' probabilities stay on the device until the tile is done, so the CPU only queues work and
the GPU never waits on a per-batch copy. ``predict_windows`` reads the next tile in a thread while the
current one runs (prefetch): what one process feeding a GPU needs. On the dask cluster, workers
overlap the same way across tiles (one reads while another's tile is in the network).

On CPU the same code runs with the same float32 operations in the same order as cutting and
normalising in numpy did, so maps are identical (tested, and checked on the demo configs' hashes).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from chain.deep.infer import PatchPredictor
from chain.deep.inputs import PatchInput, TileBlock

if TYPE_CHECKING:
    from rasterio.windows import Window

    from chain.catalog import Catalog
    from chain.spec import FeatureSpec


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision the forward runs in: bf16 on CUDA where supported, else fp16; none on CPU (exact maps)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def upload(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``: through pinned memory and a non-blocking copy on CUDA; shared, not copied, on CPU."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


class DeviceTile:
    """One tile's inputs (plus halo) resident on the device, with the patch corners of its mappable pixels."""

    def __init__(self, block: TileBlock, window: Window, device: torch.device, seconds: dict[str, float] | None = None):
        t0 = time.perf_counter()
        self.block, self.window, self.device = block, window, device
        self.valid = block.valid
        rr, cc = np.nonzero(self.valid)
        rows, cols = rr + int(window.row_off), cc + int(window.col_off)
        self.n = len(rr)
        self.inputs: list[PatchInput] = block.inputs
        self.arrays = {i.name: upload(block.arrays[i.name], device) for i in self.inputs}
        self.corners = {}
        for inp in self.inputs:
            top, left = block.corners(inp, rows, cols)
            self.corners[inp.name] = (torch.from_numpy(top.astype(np.int64)).to(device), torch.from_numpy(left.astype(np.int64)).to(device))
        if seconds is not None:
            seconds["upload"] = seconds.get("upload", 0.0) + time.perf_counter() - t0

    def cut(self, start: int, stop: int) -> list[torch.Tensor]:
        """Patches (n, C, s, s) of pixels [start, stop) of the tile, per input, in the inputs' order."""
        out = []
        for inp in self.inputs:
            arr = self.arrays[inp.name]
            top, left = self.corners[inp.name]
            view = arr.unfold(1, inp.size, 1).unfold(2, inp.size, 1)  # (C, H', W', s, s), no copy
            out.append(view[:, top[start:stop], left[start:stop]].permute(1, 0, 2, 3).contiguous())
        return out


class DevicePatchPredictor(PatchPredictor):
    """A torch patch network whose tiles are cut and normalised on its device (``served``: normalisation folded in)."""

    def __init__(self, inputs: list[PatchInput], classes: Any, batch: int, served: torch.nn.Module, device: torch.device):
        self.served, self.device = served, device
        names = [i.name for i in inputs]

        def proba(patches: dict[str, np.ndarray]) -> np.ndarray:  # host patches (tests, training-time evaluation)
            with torch.no_grad(), self._autocast():
                return self.served(*[torch.from_numpy(patches[k]).float().to(device) for k in names]).float().cpu().numpy()

        super().__init__(inputs, classes, batch, proba)
        self.seconds: dict[str, float] = {}  # per stage, summed over the tiles predicted (bench/deep.py's profile)

    def _autocast(self) -> Any:
        dtype = autocast_dtype(self.device)
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)

    def read(self, cat: Catalog, spec: FeatureSpec, window: Window) -> DeviceTile:
        """The CPU's share: read and compute the tile's inputs, then upload them."""
        t0 = time.perf_counter()
        block = TileBlock(cat, spec, self.inputs, window)
        self.seconds["read"] = self.seconds.get("read", 0.0) + time.perf_counter() - t0
        if self.device.type != "cuda":
            return DeviceTile(block, window, self.device, self.seconds)
        # copied on a stream of its own, so that a prefetched tile's upload overlaps the current tile's batches;
        # done (synchronised, in the reading thread) before the tile is handed over
        stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            tile = DeviceTile(block, window, self.device, self.seconds)
        stream.synchronize()
        return tile

    def run(self, tile: DeviceTile) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """The device's share: cut, normalise and forward every batch; one copy of the probabilities back per tile."""
        if self.device.type == "cuda":  # allocated on the upload stream, used on this one: keep them until it is done
            for t in [*tile.arrays.values(), *(c for pair in tile.corners.values() for c in pair)]:
                t.record_stream(torch.cuda.current_stream(self.device))
        probs = torch.empty((tile.n, len(self.classes_)), dtype=torch.float32, device=self.device)
        cut = forward = 0.0
        with torch.no_grad(), self._autocast():
            for s in range(0, tile.n, self.batch):
                t0 = time.perf_counter()
                xs = tile.cut(s, min(s + self.batch, tile.n))
                t1 = time.perf_counter()
                probs[s:s + self.batch] = self.served(*xs).float()
                cut, forward = cut + t1 - t0, forward + time.perf_counter() - t1
        out = probs.cpu().numpy()  # on CUDA: waits for the tile's queued batches
        self.seconds["cut"] = self.seconds.get("cut", 0.0) + cut
        self.seconds["forward"] = self.seconds.get("forward", 0.0) + forward  # includes normalising (the first layer)
        return tile.valid, out, tile.block.per_sensor

    def predict_window(self, cat: Catalog, spec: FeatureSpec, window: Window) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        return self.run(self.read(cat, spec, window))

    def predict_windows(self, cat: Catalog, spec: FeatureSpec, windows: Iterable[Window]
                        ) -> Iterator[tuple[Window, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]]:
        """``predict_window`` over ``windows`` in order, the next tile read (and uploaded) in a thread meanwhile."""
        windows = list(windows)
        if not windows:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="chain-prefetch") as pool:
            ahead = pool.submit(self.read, cat, spec, windows[0])
            for k, window in enumerate(windows):
                tile = ahead.result()
                if k + 1 < len(windows):
                    ahead = pool.submit(self.read, cat, spec, windows[k + 1])
                yield window, self.run(tile)
