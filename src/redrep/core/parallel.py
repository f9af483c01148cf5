"""The analysis spread over the cores: worker processes forked from this one, or threads where forking is not safe.

The chunk accuracies and regressions make tens of thousands of numpy and BLAS
calls on arrays of a few hundred kilobytes each. Numpy releases the
interpreter lock inside a call, but threads making such calls side by side
spend most of their time handing the lock over: on 2 cores, two threads ran
the chunk regressions 1.1 times as fast as one, the accuracies 1.5 times;
two processes run both 1.9 to 2 times as fast. So the work goes to processes
forked from the analysing one once its arrays are built: they see those
arrays without a copy (the pages are shared until written, and nothing
writes them), and only task descriptions and small results travel through
pipes.

Each worker's BLAS runs one thread (the products are too small to split), a
worker ends with the process that forked it, however that ends (kill -9
included), and it leaves Ctrl-C to that process, which stops the pool. The
numbers do not depend on the workers: every task computes the same thing
wherever it runs, and its results are combined in task order or as exact
integers.

Where forking is not safe (not Linux, or inside a daemonic process, which
may not have children) the tasks run in threads of this process instead,
with the same results.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .validation import RedrepError

#: Most worker processes (or threads) of one analysis.
MAX_WORKERS = 8
#: Estimated multiply-adds below which a pool runs its tasks in this thread: forking the workers and warming
#: them up costs some tens of milliseconds, more than they would save on such work.
MIN_WORK = 2e9

# The state of each live pool, by key: set before the workers are forked, so that they inherit it.
_STATES: dict[int, object] = {}
_KEYS = itertools.count()


def n_workers() -> int:
    """Workers for this process: its CPUs (affinity), at most the BLAS threads allowed and :data:`MAX_WORKERS`.

    The BLAS limit carries a restriction set with ``OPENBLAS_NUM_THREADS`` (or
    the like), or by a sweep worker given a share of the cores, over to the
    worker count.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    blas = [int(i.get("num_threads", 1)) for i in _controller().info() if i.get("user_api") == "blas"]
    return max(1, min([MAX_WORKERS, cpus] + blas))


def _controller():
    """A threadpoolctl controller of the libraries loaded now (one scan of them, which takes milliseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def can_fork() -> bool:
    """Whether worker processes may be forked here: on Linux, outside a daemonic process."""
    return sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


def die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` ends, however it ends (kill -9 included)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    # a watchdog for systems without PR_SET_PDEATHSIG (and a second line of defence on Linux)
    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="redrep-parent-watchdog", daemon=True).start()


def _worker_init(parent: int, controller) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    # one BLAS thread: for the libraries loaded now (the inherited controller knows them: no new scan) and, through
    # the environment, for any loaded later (two workers each running a multi-threaded BLAS run many times slower)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    controller.limit(limits=1, user_api="blas")


def _call(args):
    key, name, i, payload = args
    t0 = time.perf_counter()
    result = _STATES[key][name].run(payload)
    return i, time.perf_counter() - t0, result


def stop_process_pool(executor: ProcessPoolExecutor) -> None:
    """Stop a process pool now: queued tasks are dropped, workers still running are killed (SIGKILL)."""
    for proc in list((getattr(executor, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.kill()
    executor.shutdown(wait=True, cancel_futures=True)


def _finished(futures):
    """The results of ``futures`` as they finish; a dead worker process becomes a one-line error."""
    try:
        for f in as_completed(futures):
            yield f.result()
    except BrokenProcessPool:
        raise RedrepError(
            "a worker process of the analysis died before finishing its task (killed, or out of memory: "
            "fewer rows at a time, --block-rows, need less)"
        ) from None


class SharedArrays:
    """float64 arrays in memory shared with the workers: allocated before they are forked, filled after.

    Parameters
    ----------
    shapes : dict name -> shape
    """

    def __init__(self, shapes: dict):
        sizes = {k: int(np.prod(s, dtype=np.int64)) for k, s in shapes.items()}
        self._buf = mmap.mmap(-1, max(8, 8 * sum(sizes.values())))  # MAP_SHARED | MAP_ANONYMOUS
        self.arrays = {}
        offset = 0
        for k, shape in shapes.items():
            self.arrays[k] = np.ndarray(shape, dtype=np.float64, buffer=self._buf, offset=offset)
            offset += 8 * sizes[k]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


class Pool:
    """``n`` workers that run the tasks of named jobs: ``jobs[name].run(payload)``.

    Parameters
    ----------
    jobs : dict name -> object with a ``run(payload)`` method; forked workers
        inherit the objects as they are when the pool starts (what they must
        see later goes through :class:`SharedArrays`)
    n : workers; default :func:`n_workers`. With 1, tasks run in this thread.
    processes : fork worker processes (default: where :func:`can_fork`), else threads
    work : estimated multiply-adds of all the tasks; below :data:`MIN_WORK`, one worker (this thread)

    The workers start at the first call with more than one task (the jobs
    must be complete by then); a single task runs in this thread. Use as a
    context manager; the workers end with it.

    Attributes
    ----------
    seconds : dict job name -> seconds its tasks took, summed over the workers
    """

    def __init__(self, jobs: dict, n: int | None = None, *, processes: bool | None = None, work: float | None = None):
        self.n = n_workers() if n is None else max(1, int(n))
        if work is not None and work < MIN_WORK:
            self.n = 1
        self.processes = (can_fork() if processes is None else processes) and self.n > 1
        self.seconds = dict.fromkeys(jobs, 0.0)
        self._key = next(_KEYS)
        _STATES[self._key] = jobs
        self._executor = None

    def _start(self) -> None:
        """Fork the workers (or start the threads) at the first call that has several tasks."""
        if self._executor is not None or self.n == 1:
            return
        if self.processes:
            ctx = multiprocessing.get_context("fork")
            self._executor = ProcessPoolExecutor(
                self.n, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(), _controller())
            )
        else:
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(limits=1, user_api="blas")  # for the pool's life, undone at close
            self._executor = ThreadPoolExecutor(self.n)

    def imap_unordered(self, tasks: Iterable[tuple[str, object]]) -> Iterator[tuple[int, object]]:
        """Run ``tasks``, pairs ``(job name, payload)``; yield ``(index of the task, result)`` as they finish.

        The tasks are queued now, behind those of earlier calls still
        running. An exception raised by a task is raised by the iterator; a
        worker process that dies (killed, out of memory) raises
        :class:`~redrep.core.validation.RedrepError` rather than leaving its task
        waiting forever.
        """
        tasks = list(tasks)
        if len(tasks) > 1:
            self._start()
        if len(tasks) > 1 and self._executor is not None:
            futures = [self._executor.submit(_call, (self._key, name, i, p)) for i, (name, p) in enumerate(tasks)]
            results = _finished(futures)
        else:  # in this thread, as the iterator is consumed
            results = (_call((self._key, name, i, p)) for i, (name, p) in enumerate(tasks))
        return self._collect(tasks, results)

    def _collect(self, tasks, results):
        for i, seconds, result in results:
            self.seconds[tasks[i][0]] += seconds
            yield i, result

    def close(self) -> None:
        """End the workers; tasks still queued are dropped and processes still running are killed."""
        executor, self._executor = self._executor, None
        if isinstance(executor, ProcessPoolExecutor):
            stop_process_pool(executor)  # every result is in, or the analysis is being abandoned
        elif executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
            self._limits.restore_original_limits()
        _STATES.pop(self._key, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
