"""Slices in parallel: outputs keep their order whatever order the jobs finish in, torch threads
handed out never exceed the cores (a lone job gets them all, a queue one each), failures stop
the scan, and a replay or a served scan through the CSC chain gives the images of one-at-a-time
processing in the same order and numbering. No timing is asserted."""

import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import torch

from adacsc import settings
from adacsc.chain.config import load_chain
from adacsc.core.dictionary import random_dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.core.lambdas import FixedLambda
from adacsc.core.reconstruct import CSCReconstructor
from adacsc.client import send_scan
from adacsc.gadgets import csc
from adacsc.gadgets.slice_pool import OrderedSender, SlicePool
from adacsc.replay import replay
from support.scans import read_images
from support.server import threaded_server

pytestmark = pytest.mark.timeout(120)

CSC_FAST = {"iterations": "8", "mode": "scalar", "lambda": "0.1", "beta": "4", "super_resolution": "1"}


class ManualPool:
    """A stand-in pool whose jobs finish when the test says so."""

    cores = 2

    def __init__(self) -> None:
        self.jobs: list[tuple[Future, object]] = []

    def submit(self, job):
        future: Future = Future()
        self.jobs.append((future, job))
        return future

    def finish(self, index: int) -> None:
        future, job = self.jobs[index]
        try:
            future.set_result(job())
        except Exception as err:
            future.set_exception(err)


def test_items_are_sent_in_the_order_given_whatever_order_jobs_finish():
    pool, sent = ManualPool(), []
    with OrderedSender(sent.append, pool, max_pending=8) as output:
        output.now("header")
        output.later(lambda: ["a1", "a2"])
        output.now("between")
        output.later(lambda: ["b1"])
        output.later(lambda: [])
        output.now("end")
        for index in (2, 1, 0):
            pool.finish(index)
    assert sent == ["header", "a1", "a2", "between", "b1", "end"]


def test_a_failed_job_stops_the_scan_with_its_error():
    pool, sent = ManualPool(), []

    def broken():
        raise ValueError("slice 1 broke")

    with pytest.raises(ValueError, match="slice 1 broke"):
        with OrderedSender(sent.append, pool) as output:
            output.later(lambda: ["slice 0"])
            output.later(broken)
            output.later(lambda: ["slice 2"])
            for index in range(3):
                pool.finish(index)
    assert sent == ["slice 0"]


def test_leaving_with_an_error_sends_nothing_more():
    pool, sent = ManualPool(), []
    with pytest.raises(RuntimeError, match="connection lost"):
        with OrderedSender(sent.append, pool) as output:
            output.later(lambda: ["slice 0"])
            raise RuntimeError("connection lost")
    assert sent == []


def test_pool_shares_the_cores_a_lone_job_takes_all_a_queue_one_each():
    pool = SlicePool(2)
    release = threading.Event()
    lock = threading.Lock()
    held = {"now": 0, "max": 0}
    threads: list[int] = []

    def job(wait: bool = False) -> int:
        n = torch.get_num_threads()
        with lock:
            held["now"] += n
            held["max"] = max(held["max"], held["now"])
        if wait:
            assert release.wait(30)
        torch.ones(64).sum()
        with lock:
            held["now"] -= n
        return n

    first = pool.submit(lambda: job(wait=True))  # alone: every core
    queued = [pool.submit(job) for _ in range(4)]  # wait for a core meanwhile
    release.set()
    threads = [first.result(30)] + [f.result(30) for f in queued]
    assert threads[0] == 2
    assert sorted(threads[1:])[:2] == [1, 1]  # the first two to start had others waiting
    assert held["max"] <= 2


def _tiny_solve() -> int:
    """A few FISTA iterations (each calls the pool's hook); the thread count afterwards."""
    solver = CSCReconstructor(FilterBank(random_dictionary(4, 5, seed=0).filters))
    solver.infer(torch.ones(1, 8, 8, dtype=torch.complex64), (16, 16), FixedLambda(0.1), 3)
    return torch.get_num_threads()


def test_running_job_gives_a_core_to_a_new_slice_and_takes_it_back_after():
    pool = SlicePool(2)
    first_running, second_started = threading.Event(), threading.Event()
    first_shrunk, second_done = threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> list[int]:
        counts = [torch.get_num_threads()]
        first_running.set()
        while not second_started.is_set() and len(counts) < 10_000:
            counts.append(_tiny_solve())
        counts.append(_tiny_solve())  # the second job holds a core meanwhile
        first_shrunk.set()
        while not second_done.is_set() and len(counts) < 20_000:
            counts.append(_tiny_solve())
        while counts[-1] != 2 and len(counts) < 30_000:
            counts.append(_tiny_solve())
        return counts

    def second() -> None:
        seen.append(torch.get_num_threads())
        second_started.set()
        assert first_shrunk.wait(30)

    one = pool.submit(first)
    assert first_running.wait(30)  # alone when it started
    pool.submit(second).result(60)
    second_done.set()
    counts = one.result(60)
    assert counts[0] == 2 and seen == [1]
    assert 1 in counts and counts[-1] == 2  # gave a core away, took it back when alone


def test_a_cancelled_job_does_not_hold_back_threads():
    pool = SlicePool(2)
    release = threading.Event()
    blocker = pool.submit(lambda: release.wait(30))
    queued = [pool.submit(torch.get_num_threads) for _ in range(3)]
    assert all(future.cancel() for future in queued[1:])  # the pool's second thread holds queued[0]
    release.set()
    blocker.result(30)
    queued[0].result(30)
    assert pool.submit(torch.get_num_threads).result(30) == 2


def test_one_worker_runs_slices_one_at_a_time_with_every_core():
    pool = SlicePool(2, workers=1)
    lock, running = threading.Lock(), {"now": 0, "max": 0}

    def job() -> int:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        torch.ones(64).sum()
        with lock:
            running["now"] -= 1
        return torch.get_num_threads()

    assert [f.result(30) for f in [pool.submit(job) for _ in range(3)]] == [2, 2, 2]
    assert running["max"] == 1


def test_pool_needs_a_core_and_a_worker():
    with pytest.raises(ValueError, match="at least one core"):
        SlicePool(0)
    with pytest.raises(ValueError, match="at least one worker"):
        SlicePool(2, workers=0)


@pytest.mark.parametrize("value, expected", [("", None), ("1", 1), (" 3 ", 3), ("0", ValueError),
                                             ("two", ValueError)])
def test_slice_workers_setting(value, expected, monkeypatch):
    monkeypatch.setenv("ADACSC_SLICE_WORKERS", value)
    if expected is ValueError:
        with pytest.raises(ValueError, match="ADACSC_SLICE_WORKERS"):
            settings.slice_workers()
    else:
        assert settings.slice_workers() == expected


@pytest.fixture()
def two_core_pool(monkeypatch: pytest.MonkeyPatch) -> SlicePool:
    pool = SlicePool(2)
    monkeypatch.setattr(csc, "shared_pool", lambda: pool)
    return pool


def _series(path: Path, group: str | None = None) -> dict[str, list[tuple[int, int, np.ndarray]]]:
    return {name: [(im.slice, im.image_index, im.data) for im in images]
            for name, images in read_images(path, group).items()}


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert [(s, i) for s, i, _ in a[name]] == [(s, i) for s, i, _ in b[name]]
        for (_, _, x), (_, _, y) in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4 * float(np.abs(y).max()))


def test_replay_in_parallel_gives_the_one_at_a_time_images_in_order(sim_scan, tmp_path, monkeypatch):
    chain = load_chain("adacsc_lowfield").with_overrides(CSC_FAST)
    outputs = {}
    for cores in (1, 2):
        pool = SlicePool(cores)
        monkeypatch.setattr(csc, "shared_pool", lambda pool=pool: pool)
        replay(sim_scan, tmp_path / f"out{cores}.h5", chain, "g")
        outputs[cores] = _series(tmp_path / f"out{cores}.h5", "g")
    _assert_same(outputs[2], outputs[1])
    assert [i for _, i, _ in outputs[2]["image_1"]] == [1, 2]
    assert [s for s, _, _ in outputs[2]["image_1"]] == [0, 1]


def test_served_scans_share_the_pool_and_keep_their_order(sim_scan, tmp_path, two_core_pool):
    chain = load_chain("adacsc_lowfield").with_overrides(CSC_FAST)
    replay(sim_scan, tmp_path / "offline.h5", chain, "g")
    results = {}
    with threaded_server(workers=2) as running:
        def send(name: str) -> None:
            results[name] = send_scan(sim_scan, tmp_path / f"{name}.h5", port=running.port, group="g",
                                      config_name="adacsc_lowfield", overrides=CSC_FAST, timeout=60)
        senders = [threading.Thread(target=send, args=(name,)) for name in ("a", "b")]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
    offline = _series(tmp_path / "offline.h5", "g")
    for name in ("a", "b"):
        assert results[name].ok, results[name].errors
        _assert_same(_series(tmp_path / f"{name}.h5", "g"), offline)
