"""``redrep sweep``: train a width family (locally or on SLURM), analyse it, plot and report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..core.device import resolve_device
from ..experiments.executors import LocalExecutor, SlurmExecutor, SlurmOptions, local_devices, parse_slurm_params
from ..experiments.sweep import DEFAULT_RECIPE, SLURM_DIR, SweepConfig, run_sweep
from ..experiments.sweep_state import MAX_RUNS, MAX_SEEDS
from . import int_list_callback
from .training_options import config_from_options, training_options

_D = SweepConfig()  # the sweep's own defaults live in its config; the training ones in the recipes
_S = SlurmOptions()


@click.command("sweep")
@training_options(DEFAULT_RECIPE)
@click.option(
    "--widths",
    default=",".join(map(str, _D.widths)),
    show_default=True,
    callback=int_list_callback,
    help="Comma-separated widths W of the last hidden layer (mlp: of every hidden layer; Wide-ResNet: k = W/64).",
)
@click.option(
    "--seeds",
    type=int,
    default=_D.seeds,
    show_default=True,
    help=f"Seeds per width (0 .. N-1), at most {MAX_SEEDS}; a sweep has at most {MAX_RUNS} runs (widths x seeds).",
)
@click.option(
    "--acc-rep",
    "--acc_rep",
    "acc_rep",
    type=int,
    default=_D.acc_rep,
    show_default=True,
    help="Random chunks per size for the accuracies.",
)
@click.option(
    "--r2-rep",
    "--r2_rep",
    "r2_rep",
    type=int,
    default=_D.r2_rep,
    show_default=True,
    help="Random chunks per size for the R² and correlations.",
)
@click.option("--analysis-seed", type=int, default=_D.analysis_seed, show_default=True, help="Seed of the chunk draws.")
@click.option(
    "--executor",
    type=click.Choice(["local", "slurm"]),
    default="local",
    show_default=True,
    help="Where the runs train: local processes, or one SLURM job-array task per run (submitit).",
)
@click.option(
    "--jobs",
    type=int,
    default=_D.jobs,
    show_default=True,
    help="Local executor: runs trained at once, in worker processes; with N GPUs worker i trains on GPU i mod N "
    "(several runs per GPU where the jobs outnumber the GPUs).",
)
@click.option("--slurm-partition", default=None, help="SLURM partition of the jobs.")
@click.option("--slurm-time", type=int, default=_S.time_min, show_default=True, help="Time limit per run, minutes.")
@click.option("--slurm-gpus", type=int, default=None, help="GPUs per run [default: 1 for a CNN, 0 for the mlp].")
@click.option(
    "--slurm-cpus",
    type=int,
    default=_S.cpus,
    show_default=True,
    help="CPU cores per run (a job that asks more than any node has is cancelled, with a message).",
)
@click.option("--slurm-mem-gb", type=float, default=None, help="Memory per run, GB [default: the partition's].")
@click.option(
    "--slurm-param",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another sbatch parameter (account, qos, constraint, ...) or submitit's; repeatable. Those with a flag "
    "of their own (partition, time, cpus_per_task, ...) and those redrep sets (job_name, comment, array) are refused.",
)
@click.option("--max-parallel", type=int, default=None, help="SLURM: at most this many runs at once (array throttle).")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the runs and collect; --no-wait submits (SLURM) and returns.",
)
@click.option(
    "--wait-timeout",
    type=float,
    default=None,
    help="Stop waiting after this many minutes (SLURM runs go on, local ones stop; re-run to collect) "
    "[default: no limit].",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Sweep folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def command(
    widths,
    seeds,
    acc_rep,
    r2_rep,
    analysis_seed,
    executor,
    jobs,
    slurm_partition,
    slurm_time,
    slurm_gpus,
    slurm_cpus,
    slurm_mem_gb,
    slurm_param,
    max_parallel,
    wait,
    wait_timeout,
    out,
    quiet,
    **options,
):
    """Train networks that differ only in width (several seeds), then compare full networks
    with chunks of the widest one.

    The runs' training defaults are the recipe's (--recipe, demo-mlp unless
    given); every option given overrides it, and each run sets its own width
    and seed. Re-running the same command resumes: finished runs are kept,
    queued or running ones are left alone, failed or missing ones are run
    again, and the sweep is collected once every run has finished.
    """
    train = config_from_options(DEFAULT_RECIPE, options)
    config = SweepConfig(
        train=train,
        widths=tuple(widths),
        seeds=seeds,
        acc_rep=acc_rep,
        r2_rep=r2_rep,
        analysis_seed=analysis_seed,
        jobs=jobs,
        progress=not quiet,
    ).validated()
    if wait_timeout is not None and not wait_timeout > 0:
        raise click.BadParameter(f"expected minutes > 0, found {wait_timeout}", param_hint="--wait-timeout")
    slurm_given = [
        flag
        for flag, value, default in (
            ("--slurm-partition", slurm_partition, None),
            ("--slurm-time", slurm_time, _S.time_min),
            ("--slurm-gpus", slurm_gpus, None),
            ("--slurm-cpus", slurm_cpus, _S.cpus),
            ("--slurm-mem-gb", slurm_mem_gb, None),
            ("--slurm-param", slurm_param or None, None),
            ("--max-parallel", max_parallel, None),
        )
        if value != default
    ]
    if executor != "slurm" and slurm_given:
        raise click.BadParameter(
            f"{', '.join(slurm_given)} given, expected with --executor slurm only", param_hint="--executor"
        )
    if executor == "slurm":
        for flag, value, least in (
            ("--slurm-time", slurm_time, 1),
            ("--slurm-cpus", slurm_cpus, 1),
            ("--slurm-gpus", slurm_gpus, 0),
            ("--max-parallel", max_parallel, 1),
        ):
            if value is not None and value < least:
                raise click.BadParameter(f"expected an integer >= {least}, found {value}", param_hint=flag)
        if slurm_mem_gb is not None and not 0 < slurm_mem_gb < float("inf"):
            raise click.BadParameter(f"expected gigabytes > 0, found {slurm_mem_gb}", param_hint="--slurm-mem-gb")
        options = SlurmOptions(
            partition=slurm_partition,
            time_min=slurm_time,
            gpus=slurm_gpus,
            cpus=slurm_cpus,
            mem_gb=slurm_mem_gb,
            params=parse_slurm_params(slurm_param),
            max_parallel=max_parallel,
        )
        # the device is resolved on each compute node: this machine (a login node) may have no GPU
        ex = SlurmExecutor(out / SLURM_DIR, options, arch=config.train.arch)
        ex.check()  # sbatch there, and the parameters submitit's and sbatch's: before anything is written
    else:
        dev = resolve_device(config.train.device)  # once, here; the workers get their own device from it
        config = replace(config, train=replace(config.train, device=dev))
        ex = LocalExecutor(config.jobs, local_devices(dev, config.jobs))
    timeout = None if wait_timeout is None else wait_timeout * 60
    result = run_sweep(config, out, executor=ex, wait=wait, timeout=timeout, log=click.echo)
    if result is not None:
        echo_result(result)


def echo_result(result):
    click.echo(
        f"{'W':>6}  {'full test err':>14}  {'chunk test err':>14}  {'full train err':>14}  {'chunk train err':>15}"
    )
    for r in result.table:
        click.echo(
            f"{r['width']:>6}  {r['full_test_mean']:>14.4f}  {r['chunk_test_mean']:>14.4f}  "
            f"{r['full_train_mean']:>14.4f}  {r['chunk_train_mean']:>15.4f}"
        )
    click.echo(f"report:  {result.report}")
    for f in result.figures:
        click.echo(f"figure:  {f}")
