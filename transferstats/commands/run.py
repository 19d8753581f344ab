"""``transferstats run GRID --executor local|slurm``: run (or submit) every run of a grid that is
not complete yet; failed runs are retried only with ``--retry-failed``."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from transferstats.grid.expand import expand_grid
from transferstats.grid.spec import SpecError, load_grid, parse_time


def add_arguments(parser):
    parser.add_argument("grid", type=Path, help="grid specification (runners/*.toml)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="local: this machine, one run per visible GPU (or one on CPU); "
                             "slurm: job arrays through submitit (default: local)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results folder (default: results/)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed runs and encoders again (default: leave them failed)")
    local = parser.add_argument_group("local executor")
    local.add_argument("--devices", help="'cpu', or comma-separated GPU ids to use "
                                         "(default: every visible GPU, else the CPU)")
    local.add_argument("--no-progress", action="store_true", help="no progress bars")
    slurm = parser.add_argument_group("slurm executor (defaults from the grid's [slurm] table)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", help="time limit per job: minutes or [D-]HH:MM:SS")
    slurm.add_argument("--gpus", type=int, help="GPUs per job")
    slurm.add_argument("--mem", help="memory per job, e.g. 64G")
    slurm.add_argument("--account")
    slurm.add_argument("--parallelism", type=int, help="array tasks running at once, per array")
    slurm.add_argument("--cpus-per-task", type=int)
    slurm.add_argument("--submitit-cluster", choices=("slurm", "local"), default="slurm",
                       help="'local' runs the job arrays on this machine through submitit's "
                            "local executor (to try a grid without Slurm)")


def _visible_devices(requested: str | None) -> list[str]:
    from transferstats.grid.local import CPU

    if requested:
        return [CPU] if requested == CPU else [d.strip() for d in requested.split(",") if d.strip()]
    try:
        import torch
    except ImportError:
        return [CPU]
    count = torch.cuda.device_count()
    if count == 0:
        return [CPU]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    # Children get CUDA_VISIBLE_DEVICES set to one id, so use the ids as the parent sees them.
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()][:count]
    return [str(index) for index in range(count)]


def _prepared_assets(grid, results_dir: Path) -> tuple[str, dict]:
    """The model and ``[data]`` to run with, after the grid's prepare step."""
    if grid.prepare == "smoke-assets":
        from transferstats.train.smoke import make_smoke_assets

        assets = make_smoke_assets(results_dir / grid.assets_dir)
        return str(assets["model"]), {**grid.data, "data_dir": str(assets["data_dir"])}
    return grid.model, grid.data


def _slurm_options(grid, args):
    from transferstats.grid.slurm import SlurmOptions

    spec = grid.slurm
    chosen = {
        "partition": args.partition or spec.get("partition"),
        "account": args.account or spec.get("account"),
        "memory": args.mem or spec.get("memory"),
    }
    time = args.time or spec.get("time")
    if time is not None:
        chosen["time_minutes"] = parse_time(time)
    for name, value in (("gpus", args.gpus), ("parallelism", args.parallelism),
                        ("cpus_per_task", args.cpus_per_task)):
        if value is None:
            value = spec.get(name)
        if value is not None:
            chosen[name] = int(value)
    return SlurmOptions(**{k: v for k, v in chosen.items() if v is not None})


def run(args) -> int:
    console = Console(stderr=True)
    try:
        grid = load_grid(args.grid)
    except SpecError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    model, data = _prepared_assets(grid, args.results)
    plan = expand_grid(grid, args.results, model=model, data=data)

    if args.executor == "slurm":
        try:
            import submitit  # noqa: F401  (checked here to answer with the fix, not a traceback)
        except ImportError:
            console.print("[red]error:[/red] the slurm executor needs submitit: "
                          "pip install 'transferstats[train]'")
            return 2
        from transferstats.grid.slurm import SlurmExecutor

        try:
            options = _slurm_options(grid, args)
        except ValueError as error:
            console.print(f"[red]error:[/red] {error}", highlight=False)
            return 2
        jobs = SlurmExecutor(options, retry_failed=args.retry_failed,
                             cluster=args.submitit_cluster).run(plan, args.results)
        arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
        console.print(f"submitted {len(jobs)} jobs (arrays: {', '.join(arrays) or 'none'}); "
                      f"follow with: transferstats status {args.results} --grid {args.grid}",
                      highlight=False)
        return 0

    from transferstats.grid.local import LocalExecutor

    devices = _visible_devices(args.devices)
    outcome = LocalExecutor(devices, retry_failed=args.retry_failed,
                            show_progress=not args.no_progress, console=console).run(plan)
    summary = ", ".join(f"{count} {name}" for name, count in sorted(outcome.counts.items()))
    console.print(f"{grid.name} on {', '.join(devices)}: {summary or 'nothing to do'}; "
                  f"logs in {args.results / '.logs'}", highlight=False)
    return 1 if outcome.failures else 0
