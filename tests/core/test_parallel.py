"""The worker pool behind the analysis: forked processes, threads or this thread, with the same results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import redrep.core.parallel as parallel
from procs import alive, env
from redrep.core.analysis import ChunkAnalysis, GramJob, gram_matrix
from redrep.core.parallel import Pool, SharedArrays
from redrep.core.validation import RedrepError
from repsets import random_set


class Squares:
    """Each task: the square of its payload, the worker's pid, and a value written by the parent after the fork."""

    def __init__(self):
        self.shared = SharedArrays({"late": (3,)})

    def run(self, x):
        if x == -1:
            raise RedrepError("features: expected finite values, found nan at index (7, 0)")
        if x == -2:
            os.kill(os.getpid(), signal.SIGKILL)
        return x * x, os.getpid(), float(self.shared["late"].sum())


@pytest.mark.parametrize("processes,n", [(True, 3), (False, 3), (True, 1)])
def test_every_task_runs_once_and_sees_what_the_parent_shared(processes, n):
    job = Squares()
    with Pool({"sq": job}, n, processes=processes) as pool:
        first = dict(pool.imap_unordered(("sq", x) for x in range(10)))
        job.shared["late"][...] = [1.0, 2.0, 3.0]  # after the workers were forked
        second = dict(pool.imap_unordered(("sq", x) for x in range(10, 20)))
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert [first[i][0] for i in range(10)] == [x * x for x in range(10)]
    assert [second[i][0] for i in range(10)] == [x * x for x in range(10, 20)]
    assert {r[2] for r in first.values()} == {0.0}
    assert {r[2] for r in second.values()} == {6.0}
    pids = {r[1] for r in [*first.values(), *second.values()]}
    if processes and n > 1:
        assert os.getpid() not in pids and 1 <= len(pids) <= n
    else:
        assert pids == {os.getpid()}
    assert pool.seconds["sq"] > 0


@pytest.mark.parametrize("processes", [True, False])
def test_an_error_in_a_task_reaches_the_caller_as_it_was(processes):
    with Pool({"sq": Squares()}, 2, processes=processes) as pool:
        with pytest.raises(RedrepError, match=r"found nan at index \(7, 0\)"):
            list(pool.imap_unordered(("sq", x) for x in [1, 2, -1, 3]))


def test_a_worker_that_dies_is_an_error_not_a_hang():
    t0 = time.monotonic()
    with Pool({"sq": Squares()}, 2, processes=True) as pool:
        with pytest.raises(RedrepError, match="worker process of the analysis died"):
            list(pool.imap_unordered(("sq", x) for x in [1, -2, 3, 4]))
    assert time.monotonic() - t0 < 60


def test_workers_end_with_their_parent_even_when_it_is_killed(tmp_path):
    """The parent is killed with SIGKILL while its workers run long tasks: none of them outlives it."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from redrep.core.parallel import Pool

        class Sleep:
            def run(self, _):
                os.write(1, f"{os.getpid()}\\n".encode())  # one write: the two workers' lines never interleave
                time.sleep(120)

        with Pool({"s": Sleep()}, 2, processes=True) as pool:
            list(pool.imap_unordered(("s", i) for i in range(2)))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = [proc.stdout.readline() for _ in range(2)]
    assert all(line.strip().isdigit() for line in lines), (lines, proc.poll())
    workers = [int(line) for line in lines]
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.05)
    survivors = [(pid, _state(pid)) for pid in workers if alive(pid)]
    assert not survivors, (survivors, proc.stderr.read())


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.strip() for line in f if line.startswith(("State", "PPid")))
    except OSError:  # gone, or gone while being read (ESRCH)
        return "gone"


def test_gram_tasks_sum_to_the_serial_gram_matrix_bit_for_bit():
    rng = np.random.default_rng(3)
    F = (rng.standard_normal((1000, 24)) * 3 + 50).astype(np.float32)
    job = GramJob(F, block_rows=64)
    assert len(job.tasks()) > 1
    with Pool({"g": job}, 3, processes=True) as pool:
        totals = dict(pool.imap_unordered(("g", k) for k in job.tasks()))
    G, mean, n = job.combine(totals)
    G2, mean2, n2 = gram_matrix(F, block_rows=64)
    np.testing.assert_array_equal(G, G2)
    np.testing.assert_array_equal(mean, mean2)
    assert n == n2 == 1000
    Fc = F.astype(np.float64) - F.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(G, Fc.T @ Fc, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("processes", [True, False])
def test_a_nan_deep_in_the_training_set_is_named_by_its_row(monkeypatch, processes):
    rs = random_set(5, n_train=3000, n_test=200, width=8, n_classes=3)
    rs.features_train[2345, 3] = np.nan
    monkeypatch.setattr(parallel, "can_fork", lambda: processes)
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    monkeypatch.setattr(parallel, "n_workers", lambda: 2)
    with pytest.raises(RedrepError, match=r"features_train.*nan at index \(2345, 3\)"):
        ChunkAnalysis(device="cpu", chunk_sizes=[1, 8], acc_rep=2, r2_rep=2, block_rows=100).fit(rs)


def test_small_analyses_run_in_this_process_large_ones_in_workers(monkeypatch, tmp_path):
    rs = random_set(6, n_train=400, n_test=100, width=8, n_classes=3)
    monkeypatch.setattr(parallel, "n_workers", lambda: 2)
    small = ChunkAnalysis(device="cpu", chunk_sizes=[2, 8], acc_rep=3, r2_rep=3, block_rows=50).fit(rs)
    assert small.n_workers_ == 1  # far below MIN_WORK: forking would cost more than it saves
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    forked = ChunkAnalysis(device="cpu", chunk_sizes=[2, 8], acc_rep=3, r2_rep=3, block_rows=50).fit(rs)
    assert forked.n_workers_ == 2
    for key in small.values_:
        np.testing.assert_array_equal(small.values_[key], forked.values_[key])
