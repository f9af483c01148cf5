"""``redrep example``: write a small synthetic set with a known clone structure."""

from __future__ import annotations

from pathlib import Path

import click

from ..storage.synthetic import make_clone_set


@click.command("example")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("example_set"),
    show_default=True,
    help="Folder of the native representation set to write.",
)
@click.option("--n-train", type=int, default=5000, show_default=True, help="Training samples.")
@click.option("--n-test", type=int, default=2000, show_default=True, help="Test samples.")
@click.option("--n-latent", type=int, default=16, show_default=True, help="Distinct informative directions.")
@click.option("--n-copies", type=int, default=16, show_default=True, help="Noisy clones of each direction.")
@click.option("--n-classes", type=int, default=10, show_default=True, help="Classes of the readout.")
@click.option("--noise", type=float, default=0.3, show_default=True, help="Independent noise of each neuron.")
@click.option("--separation", type=float, default=8.0, show_default=True, help="Distance scale of the class means.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random draws.")
def command(out, n_train, n_test, n_latent, n_copies, n_classes, noise, separation, seed):
    """Write a synthetic representation set of noisy neuron clones (native layout)."""
    rs = make_clone_set(
        n_train=n_train,
        n_test=n_test,
        n_latent=n_latent,
        n_copies=n_copies,
        n_classes=n_classes,
        noise=noise,
        separation=separation,
        random_state=seed,
    )
    rs.save(out)
    click.echo(f"wrote a synthetic set of width {rs.width} ({n_latent} directions x {n_copies} clones) to {out}")
