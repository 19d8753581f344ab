"""One way to spread many independent tasks over workers: every bootstrap, power simulation and
coverage study goes through :func:`parallel_map` (or :func:`completed`, which yields results as
they finish).

A call maps ``function(state, task)`` over ``tasks``. ``state`` is what every task reads (a
resampling design, a simulator): it reaches each worker once, not once per task. Tasks travel in
chunks, so that a worker is not idle waiting for the next small task, and the results come back
in task order whatever order the workers finish in. Every random number a task draws must come
from the task itself (a ``numpy.random.SeedSequence`` in it), never from the worker, so the
results depend on the tasks only: not on the number of workers, nor on where they run.

Where the tasks run:

- one local process (``jobs=1``), or a pool of local processes, one per core by default
  (:func:`available_cpus`). The pool starts its processes the platform's way (``fork`` on Linux,
  ``spawn`` on macOS and Windows): the functions and the state must be picklable, the functions
  defined at module level;
- the workers of a Dask distributed scheduler (``scheduler="tcp://host:8786"``, or dask's
  configured ``scheduler-address``, which ``DASK_SCHEDULER_ADDRESS`` sets), when the optional
  extra is installed (``pip install "transferstats[dask]"``). docs/parallel.md shows how to start
  one on a Slurm cluster.

Every worker runs its tasks on one BLAS thread (:func:`set_up_worker`).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

from threadpoolctl import threadpool_limits

#: ``scheduler`` value that runs on local processes even where dask names a scheduler.
LOCAL = "local"
INSTALL_DASK = 'pip install "transferstats[dask]"'


class SchedulerError(ValueError):
    """A Dask scheduler is asked for but Dask is not installed, or cannot be reached."""


def available_cpus() -> int:
    """The CPUs this process may run on: ``os.process_cpu_count`` (Python 3.13+), else the
    affinity mask (``os.sched_getaffinity``, Linux only), else every CPU (``os.cpu_count``)."""
    process_cpu_count = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:
        return process_cpu_count() or 1
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return len(affinity(0)) or 1
    return os.cpu_count() or 1


def chunk_size(n_tasks: int, workers: int, largest: int) -> int:
    """Tasks per chunk: about four chunks per worker, so that the last ones to finish leave
    little idle time, and at most ``largest`` (fewer, larger chunks cost less to ship)."""
    return max(1, min(largest, n_tasks // (4 * max(workers, 1))))


def parallel_map(function: Callable[[Any, Any], Any], tasks: Sequence, state: Any = None, *,
                 jobs: int | None = None, scheduler: str | None = None, largest_chunk: int = 10,
                 alone: int = 0, progress: bool = False, label: str = "tasks") -> list:
    """``[function(state, task) for task in tasks]``, spread over workers, in task order.

    Parameters
    ----------
    function : callable
        A module-level function ``function(state, task)`` (picklable by reference).
    tasks : sequence
        Picklable tasks; each carries whatever randomness it needs.
    state : object, optional
        Read by every task; shipped once to each worker.
    jobs : int, optional
        Local worker processes (default: :func:`available_cpus`); 1 runs in this process.
        Ignored on a Dask scheduler, whose workers are its own.
    scheduler : str, optional
        A Dask scheduler address; ``"local"``: local processes; None or ``""``: dask's
        configured ``scheduler-address`` (``DASK_SCHEDULER_ADDRESS``) if any, else local.
    largest_chunk : int, default 10
        The most tasks in one chunk (:func:`chunk_size`).
    alone : int, default 0
        The first ``alone`` tasks are long (a whole analysis each): one per chunk, sent first.
    progress : bool, default False
        Show one progress bar over the tasks, labelled ``label``.
    """
    results: list = [None] * len(tasks)
    for index, result in completed(function, tasks, state, jobs=jobs, scheduler=scheduler,
                                   largest_chunk=largest_chunk, alone=alone, progress=progress,
                                   label=label):
        results[index] = result
    return results


def completed(function: Callable[[Any, Any], Any], tasks: Sequence, state: Any = None, *,
              jobs: int | None = None, scheduler: str | None = None, largest_chunk: int = 10,
              alone: int = 0, progress: bool = False, label: str = "tasks"
              ) -> Iterator[tuple[int, Any]]:
    """``(index, function(state, tasks[index]))`` for every task, as the results come in (the
    arguments as for :func:`parallel_map`); for callers that save each result as it comes."""
    address = scheduler_address(scheduler)
    client = dask_client(address) if address is not None else None
    workers = _dask_threads(client) if client is not None else jobs or available_cpus()
    chunks = _chunks(len(tasks), workers, largest_chunk, alone)
    if client is not None:
        results = _run_on_dask(client, function, tasks, state, chunks)
    else:
        results = _run_local(max(1, min(workers, len(chunks))), function, tasks, state, chunks)
    with progress_bar(progress, len(tasks), label) as advance:
        for start, chunk_results in results:
            for offset, result in enumerate(chunk_results):
                yield start + offset, result
            advance(len(chunk_results))


def _chunks(n_tasks: int, workers: int, largest: int, alone: int) -> list[range]:
    """Task index ranges: the first ``alone`` one each, then the rest in equal chunks."""
    size = chunk_size(n_tasks - alone, workers, largest)
    return [range(i, i + 1) for i in range(min(alone, n_tasks))] + [
        range(i, min(i + size, n_tasks)) for i in range(alone, n_tasks, size)]


#: Order of the dense matrices of a fit from which BLAS keeps its own thread count; below it
#: one thread. Threads only wait on each other over small matrices: a REML fit of lme4's
#: InstEval (dense order 1,142) and of a 1,100-mix grid (105) each ran several times faster on
#: one thread than on two of two cores (CHANGELOG.md gives the figures).
SMALL_MATRIX_ORDER = 2000


@contextmanager
def blas_threads_for(order: int) -> Iterator[None]:
    """One BLAS thread for work on dense matrices of order below ``SMALL_MATRIX_ORDER``;
    BLAS's own setting (one thread per core, or a caller's limit) for larger ones."""
    if order >= SMALL_MATRIX_ORDER:
        yield
        return
    with threadpool_limits(1):
        yield


# --------------------------------------------------------------------------------------------
# Local processes

_WORKER_STATE: Any = None


def set_up_worker() -> None:
    """Prepare a worker process for many model fits: one BLAS thread, freed memory kept.

    Several processes each running multithreaded BLAS on small matrices oversubscribe the cores
    and run slower than one thread each. A refit allocates and frees r x r arrays of several MB
    each; glibc returns such blocks to the system at once (mmap/munmap) and the next refit
    faults the pages in again, which took a quarter of the CPU time on a grid of 1,100 mixes
    (its r is 1,205). Raising glibc's mmap and trim thresholds (``mallopt``) keeps them in the
    heap. Other C libraries (macOS, Windows, musl) are left as they are.
    """
    threadpool_limits(1)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3      # glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def _init_worker(state: Any) -> None:
    global _WORKER_STATE
    _WORKER_STATE = state
    set_up_worker()


def _worker_chunk(function: Callable[[Any, Any], Any], tasks: Sequence) -> list:
    return [function(_WORKER_STATE, task) for task in tasks]


def _run_local(workers: int, function: Callable[[Any, Any], Any], tasks: Sequence, state: Any,
               chunks: list[range]) -> Iterator[tuple[int, list]]:
    if workers == 1:
        # Multithreaded BLAS on these small matrices only waits on itself (as in the workers).
        with threadpool_limits(1):
            for chunk in chunks:
                yield chunk.start, [function(state, tasks[i]) for i in chunk]
        return
    # The platform's start method (spawn on macOS and Windows pickles the state once per
    # worker, here).
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(state,)) as pool:
        futures = {pool.submit(_worker_chunk, function, [tasks[i] for i in chunk]): chunk.start
                   for chunk in chunks}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:  # a failed task (or a caller that stops early) leaves nothing queued
            for future in futures:
                future.cancel()


# --------------------------------------------------------------------------------------------
# Dask distributed


def scheduler_address(scheduler: str | None) -> str | None:
    """The Dask scheduler to run on, or None for local processes.

    ``scheduler`` names it; ``"local"`` means local processes; None or ``""`` defer to dask's
    configuration (``scheduler-address``, set by ``DASK_SCHEDULER_ADDRESS`` or dask's config
    files), as ``distributed.Client()`` does.
    """
    if scheduler == LOCAL:
        return None
    if scheduler:
        _require_dask(f"scheduler {scheduler!r} is a Dask scheduler")
        return scheduler
    try:
        import dask.config
    except ImportError:
        if os.environ.get("DASK_SCHEDULER_ADDRESS"):
            raise SchedulerError(
                f"DASK_SCHEDULER_ADDRESS is set ({os.environ['DASK_SCHEDULER_ADDRESS']}), but "
                f"dask is not installed: {INSTALL_DASK}, or unset it to run on local "
                "processes") from None
        return None
    configured = dask.config.get("scheduler-address", None)
    if configured:
        _require_dask(f"dask's scheduler-address is {configured!r}")
    return str(configured) if configured else None


def _require_dask(why: str) -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SchedulerError(f"{why}, but Dask distributed is not installed: {INSTALL_DASK}"
                           ) from None


def dask_client(address: str) -> Any:
    """A client of the scheduler at ``address``: the one this process already holds, if any
    (connecting costs a round trip; a power search runs hundreds of maps)."""
    from distributed import get_client

    try:
        return get_client(address, timeout=30)
    except OSError as error:
        raise SchedulerError(f"cannot reach the Dask scheduler at {address}: {error}") from None


# Dask workers may be threads of this very process (a LocalCluster with processes=False): their
# BLAS thread limit is shared, and nested limits of concurrent tasks would restore each other's.
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_LIMIT: Any = None


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread while any task of this process runs; the previous limits after the last."""
    global _BLAS_USERS, _BLAS_LIMIT
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_LIMIT = threadpool_limits(1)
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                _BLAS_LIMIT.restore_original_limits()


def _dask_threads(client: Any) -> int:
    """The worker threads the scheduler has now (0 while an adaptive cluster has none)."""
    return sum(client.nthreads().values())


def _dask_chunk(function: Callable[[Any, Any], Any], state: Any, tasks: Sequence) -> list:
    with _one_blas_thread():
        return [function(state, task) for task in tasks]


def _run_on_dask(client: Any, function: Callable[[Any, Any], Any], tasks: Sequence, state: Any,
                 chunks: list[range]) -> Iterator[tuple[int, list]]:
    from distributed import as_completed as dask_completed

    # Each worker receives the state once; the chunks only refer to it.
    shared = client.scatter(state, broadcast=True, hash=False)
    futures = {client.submit(_dask_chunk, function, shared, [tasks[i] for i in chunk],
                             pure=False): chunk.start for chunk in chunks}
    try:
        for future in dask_completed(futures):
            yield futures[future], future.result()
    finally:
        client.cancel([*futures, shared])


@contextmanager
def progress_bar(show: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yield a function that advances a rich progress bar by n tasks (a no-op when hidden)."""
    if not show:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
