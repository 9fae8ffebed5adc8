"""DeviceBatches: resident uint8 arrays and streamed (procedural) datasets give the right images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import official_formats as fmt
from bench import registry
from bench.data import root as data_root_module
from bench.data.loader import DeviceBatches


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    data_root_module.set_data_root(tmp_path)
    fmt.write_mnist(tmp_path)
    yield registry.datasets().create("mnist-32")
    data_root_module.set_data_root(None)


def test_resident_batches_are_the_dataset_images_at_the_drawn_indices(mnist):
    with DeviceBatches(mnist, "cpu", batch_size=7, seed=3) as batches:
        assert batches.mode == "resident" and "memory-mapped" in batches.describe()
        for _ in range(3):
            x, idx = batches.next_with_indices()
            assert x.dtype == torch.float32 and x.shape == (7, 1, 32, 32) and x.is_contiguous()
            np.testing.assert_array_equal(x.numpy(), mnist.images(idx.numpy()))


def test_same_seed_same_batches_other_seed_other_batches(mnist):
    def first_indices(seed: int) -> list[int]:
        with DeviceBatches(mnist, "cpu", batch_size=16, seed=seed) as b:
            return [int(i) for _ in range(4) for i in b.next_with_indices()[1]]

    assert first_indices(0) == first_indices(0)
    assert first_indices(0) != first_indices(1)
    assert set(first_indices(5)) <= set(range(20))


def test_streamed_procedural_batches_do_not_depend_on_prefetching():
    ds = registry.datasets().create("dsprites-procedural-32")
    with DeviceBatches(ds, "cpu", batch_size=8, seed=1, prefetch=0) as plain, \
         DeviceBatches(ds, "cpu", batch_size=8, seed=1, prefetch=3) as ahead:
        assert plain.mode == ahead.mode == "streamed"
        for _ in range(4):
            (x0, i0), (x1, i1) = plain.next_with_indices(), ahead.next_with_indices()
            assert torch.equal(i0, i1) and torch.equal(x0, x1)
            np.testing.assert_array_equal(x0.numpy(), ds.images(i0.numpy()))


def test_streamed_array_dataset_matches_resident(mnist):
    with DeviceBatches(mnist, "cpu", batch_size=5, seed=2, resident=False, prefetch=0) as streamed:
        x, idx = streamed.next_with_indices()
    np.testing.assert_array_equal(x.numpy(), mnist.images(idx.numpy()))


def test_nhwc_arrays_come_out_nchw(tmp_path, monkeypatch):
    from bench.data import mpi3d

    monkeypatch.setattr(mpi3d, "RELEASED_SIZES", (2, 2, 1, 1, 1, 2, 3))
    data_root_module.set_data_root(tmp_path)
    try:
        fmt.write_mpi3d(tmp_path, "mpi3d/mpi3d_toy.npz", 24)
        ds = registry.datasets().create("mpi3d-toy")
        with DeviceBatches(ds, "cpu", batch_size=6, seed=0) as b:
            x, idx = b.next_with_indices()
        assert x.shape == (6, 3, 64, 64)
        np.testing.assert_array_equal(x.numpy(), ds.images(idx.numpy()))
    finally:
        data_root_module.set_data_root(None)


def test_errors_are_raised_where_the_mistake_is_made():
    ds = registry.datasets().create("dsprites-procedural-32")
    with pytest.raises(ValueError, match="procedural"):
        DeviceBatches(ds, "cpu", resident=True)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DeviceBatches(ds, "cpu", batch_size=0)


def test_a_failing_dataset_surfaces_in_the_consumer():
    class Broken:
        name = "broken"

        def __len__(self) -> int:
            return 10

        def images(self, idx):
            raise RuntimeError("renderer exploded")

    with DeviceBatches(Broken(), "cpu", batch_size=2, prefetch=2) as b, pytest.raises(RuntimeError, match="exploded"):
        next(b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_resident_on_cuda(mnist):
    with DeviceBatches(mnist, "cuda", batch_size=9, seed=0) as b:
        assert b.mode == "resident"
        x, idx = b.next_with_indices()
        assert x.is_cuda and idx.is_cuda
        np.testing.assert_array_equal(x.cpu().numpy(), mnist.images(idx.cpu().numpy()))
