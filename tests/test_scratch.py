"""chain.scratch: large per-tile buffers come back only once nothing refers to them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from chain import scratch

BIG = (scratch.MIN_BYTES // 4 // 1024 + 1, 1024)  # float32 rows just above the pooling threshold


@pytest.fixture(autouse=True)
def empty_pool():
    scratch.release()
    yield
    scratch.release()


def test_a_buffer_still_referenced_is_never_handed_out_again():
    a = scratch.empty(BIG)
    a[:] = 1.0
    view = a[5:7]  # a view keeps the buffer alive as the array itself does
    del a
    b = scratch.empty(BIG)
    b[:] = 2.0
    assert not np.shares_memory(view, b)
    assert (view == 1.0).all()


def test_a_released_buffer_is_reused_by_the_next_tile():
    a = scratch.empty(BIG)
    where = a.__array_interface__["data"][0]
    del a
    b = scratch.empty(BIG, np.float32)
    assert b.__array_interface__["data"][0] == where and b.shape == BIG and b.flags.c_contiguous
    c = scratch.empty((BIG[0] * BIG[1],), np.int32)  # the same bytes in another shape and type: a view of the same buffer
    del b
    d = scratch.zeros(BIG[0] * BIG[1] // 2, np.float64)  # as many bytes in float64, zero-filled: the first buffer
    assert d.__array_interface__["data"][0] == where and not np.shares_memory(c, d) and (d == 0).all()
    assert scratch.pooled() == 2 * np.empty(BIG, np.float32).nbytes


def test_small_arrays_are_left_to_numpy_and_a_too_large_buffer_is_not_used():
    small = scratch.empty((64, 64))
    assert scratch.pooled() == 0 and small.shape == (64, 64)
    big = scratch.empty((3 * BIG[0], BIG[1]))
    del big
    third = scratch.empty(BIG)  # the free buffer is more than twice as large: a new one
    assert third.base is not None and third.base.nbytes == third.nbytes


def test_release_keeps_buffers_in_use_valid():
    a = scratch.empty(BIG)
    a[:] = 3.0
    scratch.release()
    assert scratch.pooled() == 0 and (a == 3.0).all()
    b = scratch.empty(BIG)
    assert not np.shares_memory(a, b)


def test_threads_never_share_a_buffer_they_hold():
    held: list[np.ndarray] = []
    clashes: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for _ in range(20):
            x = scratch.empty(BIG)
            x[:] = i
            with lock:
                if any(np.shares_memory(x, h) for h in held):
                    clashes.append(i)
                held.append(x)
            if not (x == i).all():  # another thread wrote into it meanwhile
                clashes.append(i)
            with lock:
                del held[next(k for k, h in enumerate(held) if h is x)]
            del x

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clashes == []
    assert len(scratch._pool) <= scratch.KEEP


def test_a_tiled_step_leaves_no_pooled_buffer_in_its_workers():
    """map_tiles drops the workers' pools (and this process's) once its tiles are done: the next step's tiles have
    other arrays, and a worker would otherwise hold its last tile's buffers through the steps that follow."""
    from types import SimpleNamespace

    from chain import config
    from chain.cluster import map_tiles, open_client

    def tile_work(tile: SimpleNamespace) -> int:  # nested: cloudpickle sends it by value to the worker process
        from chain import scratch as pool

        a = pool.empty((pool.MIN_BYTES // 4 + 1,))
        a[:] = 1.0
        return pool.pooled()

    cfg = config.ClusterConfig(n_workers=1, threads_per_worker=1, memory_limit="1GiB")
    client = open_client(cfg)
    try:
        during = client.gather(client.map(tile_work, [SimpleNamespace(id="x")], pure=False))
        assert during[0] > 0  # the worker's pool holds the tile's buffer between tasks
        scratch.empty(BIG)  # and so does this process's
        map_tiles(client, cfg, tile_work, [SimpleNamespace(id=i) for i in ("a", "b")], is_done=lambda t: False,
                  key="scratch-test", desc="test")
        assert list(client.run(scratch.pooled).values()) == [0]
        assert scratch.pooled() == 0
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
