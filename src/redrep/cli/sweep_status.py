"""``redrep sweep-status``: what each run of a sweep is doing (without torch: it trains nothing)."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.validation import RedrepError
from ..experiments.sweep import SWEEP_FILE, read_state, run_statuses, status_line, stored_plan, sweep_status


@click.command("sweep-status")
@click.argument("sweep_dir", type=click.Path(file_okay=False, path_type=Path))
def command(sweep_dir):
    """One line per run of the sweep in SWEEP_DIR: queued (with SLURM's pending reason, and a
    word when it can never start), running, finished or failed (cancelled counts as failed, and
    says so), its job id and log."""
    if not (sweep_dir / SWEEP_FILE).is_file():
        raise RedrepError(f"{sweep_dir}: expected a redrep sweep folder (with {SWEEP_FILE}), found none")
    state = read_state(sweep_dir)
    tasks = stored_plan(state, sweep_dir)
    statuses = run_statuses(sweep_dir, tasks, state)
    for t in sorted(tasks, key=lambda t: (t.width, t.seed)):
        click.echo(status_line(t.name, statuses[t.name]))
    counts = {}
    for s in statuses.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    click.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f"; sweep {sweep_status(state, statuses)}")
