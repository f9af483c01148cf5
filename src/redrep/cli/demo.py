"""``redrep demo``: the paper's experiment on bundled data, in minutes, on a laptop CPU."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import click

from ..core.device import resolve_device
from ..experiments.executors import LocalExecutor, local_devices
from ..experiments.sweep import demo_config, run_sweep
from .sweep import echo_result


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo_output"),
    show_default=True,
    help="Where the sweep, figures and report go.",
)
@click.option("--quick", is_flag=True, help="A smaller sweep (under 90 s) that exercises every step.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Dataset cache.",
)
@click.option(
    "--jobs",
    type=int,
    default=None,
    help="Runs trained in parallel [default: 2 where the machine has 2 cores or more].",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (a GPU when present), cpu, cuda or cuda:N: where the runs train and the chunks are analysed.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def command(out, quick, data_dir, jobs, device, quiet):
    """Run a width sweep on bundled offline data and write figures and an HTML report."""
    config = demo_config(quick=quick, data_dir=str(data_dir), jobs=jobs, progress=not quiet).validated()
    dev = resolve_device(device)
    config = replace(config, train=replace(config.train, device=dev))
    t = config.train
    click.echo(
        f"demo{' (quick)' if quick else ''}: {t.dataset}, {t.arch} with {t.depth} hidden layers of "
        f"width W in {', '.join(map(str, config.widths))}; {config.seeds} seeds, {t.epochs} epochs each; "
        f"{config.jobs} run{'s' if config.jobs > 1 else ''} at a time on {dev}"
    )
    t0 = time.perf_counter()
    executor = LocalExecutor(config.jobs, local_devices(dev, config.jobs))
    result = run_sweep(config, out, executor=executor, log=click.echo)
    echo_result(result)
    click.echo(f"done in {time.perf_counter() - t0:.0f} s; open {result.report} in a browser")
