"""The parallel layer: the same numbers whether the tasks run in this process, in a pool of
processes started by ``spawn`` (macOS, Windows) on a platform without ``os.sched_getaffinity``,
or on the workers of a Dask scheduler; and clear errors where Dask is asked for but missing."""

from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import pytest

import transferstats as ts
from simulated_grids import RANDOM, simulate_grid
from transferstats import parallel
from transferstats.analysis import power as pw
from transferstats.analysis.bootstrap import crossed_bootstrap
from transferstats.analysis.parametric import parametric_bootstrap
from transferstats.cli import main
from transferstats.simulate import (
    SimulationSettings,
    flat_table,
    simulate_scores,
    simulated_mixes,
)
from transferstats.tasks import get_task

FIXED = ["diversity", "volume"]
CONTRAST = {"diversity - volume": {"diversity": 1.0, "volume": -1.0}}
TOLERANCE = 1e-9


@pytest.fixture
def spawn_without_affinity(monkeypatch):
    """Worker processes started by spawn, and no ``os.sched_getaffinity`` (nor Python 3.13's
    ``os.process_cpu_count``): macOS and Windows."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    yield
    multiprocessing.set_start_method(previous, force=True)


def close(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def few_mixes():
    """A results table of 8 mixes, two targets of two languages, two seeds, with baselines."""
    settings = SimulationSettings(diversity_levels=(1, 4), volume_levels=(10_000, 40_000),
                                  draws=2, seeds=(1, 2), targets=("xnli", "pawsx"),
                                  max_languages=3)
    return flat_table(*simulate_scores(settings))


def grid():
    return simulate_grid(np.random.default_rng(0), n_mixes=10, n_targets=3, n_languages=4)


def crossed(data, **where):
    return crossed_bootstrap(data, "improvement", FIXED, RANDOM, contrasts=CONTRAST,
                             n_resamples=24, seed=3, progress=False, jackknife_groups=4, **where)


def parametric(data, **where):
    return parametric_bootstrap(data, "improvement", FIXED, RANDOM, df=6, contrasts=CONTRAST,
                                n_resamples=24, seed=5, **where)


def small_design() -> tuple[pw.GridDesign, pw.Components]:
    """12 mixes (the planner's factorial, one draw), two languages per target, two seeds."""
    settings = SimulationSettings(draws=1, targets=("xnli", "pawsx"))
    mixes = tuple((mix, tuple(tasks.items())) for mix, tasks in simulated_mixes(settings))
    languages = {t: tuple(c for c in get_task(t).languages if c != "en")[:2]
                 for t in settings.targets}
    return pw.GridDesign("small", mixes, languages, 2), pw.default_components()


def simulations(**where) -> pw.Simulations:
    design, components = small_design()
    return pw.simulate_analyses(design, components, simulations=12, seed=7, calibration_grids=1,
                                calibration_resamples=50, **where)


def same_simulations(one: pw.Simulations, other: pw.Simulations) -> None:
    for name in ("estimate", "se", "lower", "upper"):
        close(getattr(one, name), getattr(other, name))
    assert one.calibration is not None and other.calibration is not None
    close([one.calibration.low, one.calibration.high],
          [other.calibration.low, other.calibration.high])


# --- the CPU count and the chunks ---------------------------------------------------------------

def test_cpu_count_from_whatever_the_platform_has(monkeypatch):
    monkeypatch.setattr(os, "process_cpu_count", lambda: 3, raising=False)
    assert parallel.available_cpus() == 3
    monkeypatch.delattr(os, "process_cpu_count")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    assert parallel.available_cpus() == 2
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert parallel.available_cpus() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert parallel.available_cpus() == 1


def test_chunks_cover_every_task_once_long_tasks_alone_and_first():
    chunks = parallel._chunks(103, workers=2, largest=10, alone=3)
    assert [list(c) for c in chunks[:3]] == [[0], [1], [2]]
    assert [i for c in chunks for i in c] == list(range(103))
    assert {len(c) for c in chunks[3:-1]} == {10}
    assert parallel.chunk_size(20, workers=2, largest=10) == 2
    assert parallel.chunk_size(3, workers=8, largest=10) == 1


# --- spawn, no sched_getaffinity: the numbers of one process -------------------------------------

def test_analyze_under_spawn_gives_the_serial_numbers(spawn_without_affinity, few_mixes):
    serial = ts.analyze(few_mixes, resamples=50, seed=2, jobs=1)
    pooled = ts.analyze(few_mixes, resamples=50, seed=2, jobs=2)
    assert pooled.estimates["bootstrap"]["resampling"] == "crossed cluster"
    close(pooled.bootstrap_draws, serial.bootstrap_draws)
    close(pooled.effects[["estimate", "ci_low", "ci_high"]],
          serial.effects[["estimate", "ci_low", "ci_high"]])
    assert pooled.verdict == serial.verdict


def test_bootstraps_under_spawn_give_the_serial_numbers(spawn_without_affinity):
    data = grid()
    close(parametric(data, n_jobs=2).draws, parametric(data, n_jobs=1).draws)


def test_power_simulations_under_spawn_give_the_serial_numbers(spawn_without_affinity):
    same_simulations(simulations(n_jobs=2), simulations(n_jobs=1))


def test_results_in_task_order_whatever_order_they_finish_in():
    # The first task finishes last: it sleeps in one worker while the other takes the rest.
    tasks = list(enumerate([0.5] + [0.0] * 9))
    assert parallel.parallel_map(_sleep_then_index, tasks, "state", jobs=2,
                                 largest_chunk=1) == [f"state {i}" for i in range(10)]


def _sleep_then_index(state: str, task: tuple[int, float]) -> str:
    import time

    index, seconds = task
    time.sleep(seconds)
    return f"{state} {index}"


# --- Dask ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded Dask workers in this process; their web servers (which start even
    with the dashboard off) listen on the loopback address only."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as local, \
            distributed.Client(local) as client:
        yield local
        # The client the layer connects with is this one (the default client), closed here
        # before the cluster, so that nothing tries to reconnect to it afterwards.
        assert parallel.dask_client(local.scheduler_address) is client


def test_dask_gives_the_local_numbers(cluster):
    data = grid()
    address = cluster.scheduler_address
    local_crossed, dask_crossed = crossed(data, n_jobs=1), crossed(data, scheduler=address)
    close(dask_crossed.draws, local_crossed.draws)
    close(dask_crossed.jackknife[["diversity", "volume"]],
          local_crossed.jackknife[["diversity", "volume"]])
    close(parametric(data, scheduler=address).draws, parametric(data, n_jobs=1).draws)
    same_simulations(simulations(scheduler=address), simulations(n_jobs=1))


def test_analyze_runs_on_the_scheduler_dask_is_configured_with(cluster, few_mixes, monkeypatch):
    import dask.config
    import distributed

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    dask.config.refresh()
    try:
        assert parallel.scheduler_address(None) == cluster.scheduler_address
        assert parallel.scheduler_address("local") is None
        client = parallel.dask_client(cluster.scheduler_address)
        with distributed.get_task_stream(client) as stream:
            on_dask = ts.analyze(few_mixes, resamples=50, seed=2)
        assert any("_dask_chunk" in task["key"] for task in stream.data)
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()
    local = ts.analyze(few_mixes, resamples=50, seed=2, jobs=1, scheduler="local")
    close(on_dask.bootstrap_draws, local.bootstrap_draws)


@pytest.fixture
def without_dask(monkeypatch):
    """Imports of dask and distributed fail, as where the extra is not installed."""
    for name in ("dask", "dask.config", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def test_without_dask_local_processes_serve_and_a_scheduler_asks_for_the_extra(
        without_dask, small_results, monkeypatch, capsys):
    assert parallel.scheduler_address(None) is None
    assert parallel.scheduler_address("") is None
    install = 'pip install "transferstats[dask]"'
    with pytest.raises(parallel.SchedulerError, match=r"tcp://cluster:8786.*" + r"transferstats\[dask\]"):
        parallel.scheduler_address("tcp://cluster:8786")
    with pytest.raises(ValueError, match=r"transferstats\[dask\]"):
        ts.analyze(small_results, resamples=50, scheduler="tcp://cluster:8786")
    assert main(["analyze", str(small_results), "--scheduler", "tcp://cluster:8786"]) == 2
    assert install in capsys.readouterr().err.replace("\n", "")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://cluster:8786")
    with pytest.raises(parallel.SchedulerError, match="DASK_SCHEDULER_ADDRESS.*not installed"):
        parallel.scheduler_address(None)
    assert parallel.scheduler_address("local") is None


def test_scheduler_is_a_spec_setting(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[bootstrap]\nscheduler = "tcp://cluster:8786"\n')
    assert ts.load_spec(spec).scheduler == "tcp://cluster:8786"
    assert ts.load_spec(spec, scheduler="local").scheduler == "local"
    assert ts.load_spec().scheduler == ""
    with pytest.raises(ValueError, match="scheduler"):
        ts.load_spec(scheduler=8786)


def test_chunks_fail_loudly(cluster):
    with pytest.raises(ZeroDivisionError):
        parallel.parallel_map(_divide, [1, 0, 2], 1.0, jobs=1)
    with pytest.raises(ZeroDivisionError):
        parallel.parallel_map(_divide, [1, 0, 2], 1.0, scheduler=cluster.scheduler_address)
    assert parallel.parallel_map(_divide, [1, 4], 1.0, jobs=1) == [1.0, 0.25]
    assert parallel.parallel_map(_divide, [], 1.0, jobs=2) == []


def _divide(state: float, task: int) -> float:
    return state / task
