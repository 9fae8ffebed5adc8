"""Training minibatches that keep an accelerator busy: the uint8 training set lives on the device.

:class:`DeviceBatches` draws uniform random minibatches (with replacement, like the
training loops of disentanglement_lib and of :mod:`methods.vae`) and returns them as float32
tensors (B, C, H, W) in [0, 1] on the requested device.

* **Resident** (datasets whose pixels are one uint8 array, :class:`bench.data.cache.ArrayImages`,
  when they fit): the array is copied to the device once, in chunks (Shapes3D: 5.9 GB; on
  a CPU device the memory map itself is used, so nothing is copied up front). Each batch
  is then an index draw on the device (``torch.randint`` with a device generator), an
  ``index_select`` of uint8 rows and one conversion ``x.float() * (1/255)`` — no host work,
  no host-to-device copy, no synchronisation.
* **Streamed** (procedural datasets, or arrays too large for the device): indices are drawn
  on the host with a seeded ``torch.Generator``, images made by ``dataset.images`` and
  copied over (from pinned memory on CUDA). A background thread prepares the next
  ``prefetch`` batches while the current one trains; batches are produced strictly in
  order by that one thread, so the sequence is the same with or without prefetching.

Determinism: for a given seed, dataset and device type the index sequence is fixed. The
CPU and CUDA generators are different streams, so a CPU run and a GPU run with the same
seed see different (equally uniform) batches.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np
import torch

#: fraction of the device's free memory the resident training set may take
DEFAULT_RESIDENT_FRACTION = 0.5
_COPY_ROWS = 1 << 14  # rows per chunk when moving an array to the device


class DeviceBatches:
    """An endless iterator of random minibatches on ``device``; see the module docstring.

    Args:
        dataset: any :class:`bench.data.base.ImageDataset`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
        batch_size: images per batch.
        seed: seeds the index generator.
        resident: ``True`` to require the on-device copy (error if the dataset is not an
            array), ``False`` to stream, ``None`` (default) to decide from the size.
        max_resident_bytes: size limit for the resident copy (default: half the free
            device memory on CUDA; no limit on CPU, where the memory map is used).
        prefetch: batches prepared ahead by the streaming thread (0 = no thread).
    """

    def __init__(
        self,
        dataset: Any,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        seed: int = 0,
        *,
        resident: bool | None = None,
        max_resident_bytes: int | None = None,
        prefetch: int = 2,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"DeviceBatches: batch_size must be >= 1, got {batch_size}")
        if len(dataset) < 1:
            raise ValueError(f"DeviceBatches: dataset {getattr(dataset, 'name', dataset)!r} is empty")
        self.dataset = dataset
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.n = len(dataset)
        self.mode = self._choose_mode(resident, max_resident_bytes)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if self.mode == "resident":
            self._store, self._nhwc = self._to_device(dataset.pixels(), dataset.pixel_layout)
            self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        else:
            self._generator = torch.Generator().manual_seed(self.seed)
            self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
            if prefetch > 0:
                self._thread = threading.Thread(target=self._produce, name="DeviceBatches", daemon=True)
                self._thread.start()

    # -- setup --------------------------------------------------------------------------
    def _choose_mode(self, resident: bool | None, max_bytes: int | None) -> str:
        has_array = callable(getattr(self.dataset, "pixels", None))
        if resident is False:
            return "streamed"
        if not has_array:
            if resident:
                raise ValueError(
                    f"DeviceBatches: dataset {getattr(self.dataset, 'name', '?')!r} is not held as a uint8 array "
                    f"(procedural), so it cannot be resident on the device; use resident=None or False"
                )
            return "streamed"
        if self.device.type == "cpu":
            return "resident"
        nbytes = int(self.dataset.pixels().nbytes)
        if max_bytes is None and self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            max_bytes = int(free * DEFAULT_RESIDENT_FRACTION)
        fits = max_bytes is None or nbytes <= max_bytes
        if resident and not fits:
            raise ValueError(
                f"DeviceBatches: {getattr(self.dataset, 'name', '?')!r} needs {nbytes / 1e9:.1f} GB on {self.device}, "
                f"more than the limit {max_bytes / 1e9:.1f} GB"
            )
        return "resident" if fits else "streamed"

    def _to_device(self, pixels: np.ndarray, layout: str) -> tuple[torch.Tensor | np.ndarray, bool]:
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"DeviceBatches: unknown pixel layout {layout!r}")
        if self.device.type == "cpu":
            return pixels, layout == "NHWC"  # the memory map itself: the page cache keeps it in RAM
        store = torch.empty(pixels.shape, dtype=torch.uint8, device=self.device)
        for start in range(0, len(pixels), _COPY_ROWS):
            block = torch.from_numpy(np.ascontiguousarray(pixels[start:start + _COPY_ROWS]))
            store[start:start + len(block)].copy_(block)
        return store, layout == "NHWC"

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> "DeviceBatches":
        return self

    def __next__(self) -> torch.Tensor:
        return self.next_with_indices()[0]

    def next_with_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch and the dataset indices it holds (on the batch's device)."""
        if self.mode == "resident":
            return self._resident_batch()
        if self._thread is None:
            return self._streamed_batch()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _resident_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cpu":
            # numpy, single-threaded: on a busy CPU, torch's intra-op threads wait for each other
            # on ops this small; the result is the same float32 product x * float32(1/255).
            idx = torch.randint(self.n, (self.batch_size,), generator=self._generator)
            order = np.argsort(idx.numpy(), kind="stable")
            block = np.empty((self.batch_size,) + self._store.shape[1:], dtype=np.uint8)
            block[order] = self._store[idx.numpy()[order]]
            if self._nhwc:
                block = block.transpose(0, 3, 1, 2)
            x = np.ascontiguousarray(block, dtype=np.float32)
            x *= np.float32(1.0 / 255.0)
            return torch.from_numpy(x), idx
        idx = torch.randint(self.n, (self.batch_size,), generator=self._generator, device=self.device)
        x = self._store.index_select(0, idx)
        if self._nhwc:
            x = x.permute(0, 3, 1, 2)
        return x.float().mul_(1.0 / 255.0).contiguous(), idx

    def _streamed_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(self.n, (self.batch_size,), generator=self._generator)
        x = torch.from_numpy(np.ascontiguousarray(self.dataset.images(idx.numpy()), dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
            idx = idx.to(self.device, non_blocking=True)
        return x, idx

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._streamed_batch()
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the consumer, which re-raises it
            while not self._stop.is_set():
                try:
                    self._queue.put(exc, timeout=0.1)
                    return
                except queue.Full:
                    continue

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the prefetch thread (if any) and release the device copy."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._store = None  # type: ignore[assignment]

    def __enter__(self) -> "DeviceBatches":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One line for logs: how batches are made."""
        name = getattr(self.dataset, "name", type(self.dataset).__name__)
        if self.mode == "resident":
            size = np.prod(self.dataset.pixels().shape) / 1e9
            where = "memory-mapped on the host" if self.device.type == "cpu" else f"resident on {self.device}"
            return f"{name}: {size:.2f} GB uint8 {where}, batches of {self.batch_size} sampled there"
        return f"{name}: streamed from dataset.images to {self.device}, batches of {self.batch_size}"
