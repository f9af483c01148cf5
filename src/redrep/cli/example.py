"""``redrep example``: write a small synthetic set with a known clone structure and a known critical chunk size."""

from __future__ import annotations

from pathlib import Path

import click

from ..storage.synthetic import CLASS_MEANS, known_critical_size, make_clone_set


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
@click.option(
    "--class-means",
    type=click.Choice(CLASS_MEANS),
    default="axes",
    show_default=True,
    help="axes: two classes along each direction, so that every direction is needed (the known answer holds); "
    "random: random class means.",
)
@click.option(
    "--n-classes",
    type=int,
    default=None,
    help="Classes [default: 2 x --n-latent with axes, 10 with random].",
)
@click.option("--noise", type=float, default=1.0, show_default=True, help="Independent noise of each neuron.")
@click.option(
    "--separation",
    type=float,
    default=40.0,
    show_default=True,
    help="Distance of the class means from the origin, in units of their within-class spread.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the set.")
def command(out, n_train, n_test, n_latent, n_copies, class_means, n_classes, noise, separation, seed):
    """Write a synthetic representation set of noisy neuron clones (native layout).

    With --class-means axes its critical chunk size is known: the smallest chunk
    holding a copy of every direction with probability 0.9 (docs/method.md,
    "The example and its known answer").
    """
    if n_classes is None:
        n_classes = 2 * n_latent if class_means == "axes" else 10
    rs = make_clone_set(
        n_train=n_train,
        n_test=n_test,
        n_latent=n_latent,
        n_copies=n_copies,
        n_classes=n_classes,
        noise=noise,
        separation=separation,
        random_state=seed,
        class_means=class_means,
    )
    rs.save(out)
    click.echo(f"wrote a synthetic set of width {rs.width} ({n_latent} directions x {n_copies} clones) to {out}")
    if class_means == "axes" and n_classes == 2 * n_latent:
        w = known_critical_size(n_latent, n_copies)
        click.echo(
            f"known answer: w_c* = {w}, the smallest chunk holding every direction with probability 0.9, "
            f"so about {rs.width / w:.3g} clones"
        )
