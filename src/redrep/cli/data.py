"""``redrep data``: fetch or prepare a dataset in a data folder."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.validation import RedrepError
from ..nets.config import DATASETS


@click.command("data")
@click.argument("name")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Folder of the datasets (what `redrep train --data-dir` reads).",
)
@click.option(
    "--url",
    default=None,
    help="Download from here instead of the official address: the archive (CIFAR) or the folder of the four "
    "files (MNIST), e.g. a mirror's.",
)
@click.option("--md5", default=None, help="Expected md5 of the archive (CIFAR)  [default: the official archive's]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(name, data_dir, url, md5, quiet):
    """Make dataset NAME available offline in --data-dir.

    cifar10 and cifar100 download the official python-version archive;
    mnist and parity-mnist the four official MNIST files (IDX, gzip) into
    DATA_DIR/mnist/ (md5 checked, resumable), parity-mnist then computes and
    caches its 10 principal components beside them; mnist1d generates
    MNIST-1D and caches it; digits, parity-digits and synthetic ship with the
    package and need nothing.
    """
    from ..nets.data import CIFAR, fetch_cifar, fetch_mnist, load_dataset, write_mnist1d_cache

    if name not in DATASETS:
        raise RedrepError(f"dataset: expected one of {', '.join(DATASETS)}, found {name!r}")
    if name in CIFAR:
        path, fetched = fetch_cifar(name, data_dir, url=url, md5=md5, progress=not quiet)
        what = f"downloaded {path}" if fetched else f"{path} already present"
        ds = load_dataset(name, data_dir)  # an archive that does not read is an error now, not at training time
        click.echo(f"{name}: {what} (md5 ok): {ds.n_train} train / {ds.n_test} test images")
        return
    if md5 is not None:
        raise RedrepError(f"--md5: expected a CIFAR dataset, found {name} (the MNIST files have their own md5s)")
    if name in ("mnist", "parity-mnist"):
        folder, fetched = fetch_mnist(data_dir, url=url, progress=not quiet)
        what = f"downloaded {len(fetched)} of 4 files into {folder}" if fetched else f"the 4 files already in {folder}"
        ds = load_dataset(name, data_dir)  # files that do not read are an error now; parity-mnist's cache is made
        click.echo(f"{name}: {what} (md5 ok): {ds.n_train} train / {ds.n_test} test images")
        return
    if url is not None:
        raise RedrepError(f"--url: expected a dataset to download (cifar10, cifar100, mnist), found {name}")
    if name == "mnist1d":
        path = write_mnist1d_cache(data_dir)
        ds = load_dataset(name, data_dir)
        click.echo(f"mnist1d: generated and cached in {path}: {ds.n_train} train / {ds.n_test} test sequences")
        return
    ds = load_dataset(name)
    click.echo(f"{name}: ships with the package, nothing to fetch: {ds.n_train} train / {ds.n_test} test samples")
