"""``redrep compare``: width sweeps side by side (e.g. with and without weight decay)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("compare")
@click.argument("sweep_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option(
    "--label", "labels", multiple=True, help="A label per sweep, in order  [default: the settings that differ]"
)
@click.option("--allow-mixed", is_flag=True, help="Compare sweeps of different datasets or architectures.")
def command(sweep_dirs, out, labels, allow_mixed):
    """Compare width sweeps: test error, w_c*, clones, error_inf and the decay exponent against width.

    Writes OUT/compare.csv (tidy), compare.json, figures/compare.{png,pdf} and compare.html.
    """
    from ..experiments.compare import write_comparison

    res = write_comparison(sweep_dirs, out, labels=list(labels) or None, allow_mixed=allow_mixed)
    for sentence in res.reading:
        click.echo(f"- {sentence}")
    click.echo(f"wrote {res.csv} and {res.page}")
