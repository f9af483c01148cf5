"""``redrep download``: the authors' published representations into PATH/download_repr."""

from __future__ import annotations

from pathlib import Path

import click

from ..fetch.authors import FILES_URL, MANIFEST_NAME, ZIP_URL, DownloadConfig, download_authors
from . import data_path_option


@click.command("download")
@data_path_option("Data folder; the set goes to PATH/download_repr (where `redrep analyze --path` reads it).")
@click.option("--url", default=None, help="A mirror of the article zip (skips figshare's files listing).")
@click.option(
    "--from-zip",
    "from_zip",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The article zip fetched by hand: check and extract it, no network.",
)
@click.option("--force", is_flag=True, help="Download again even if the files verify against the manifest.")
@click.option("--files-url", default=FILES_URL, show_default=True, help="figshare's files listing of the article.")
@click.option("--zip-url", default=ZIP_URL, show_default=True, help="The article zip, used when the listing fails.")
@click.option("--retries", type=int, default=4, show_default=True, help="Retries of a transient network failure.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for data (read timeout).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes.")
def command(path, url, from_zip, force, files_url, zip_url, retries, timeout, quiet):
    """Fetch the authors' WRN-28-8 / CIFAR-10 representations (figshare 21153040 v2).

    Files are verified (figshare's md5s, the zip's CRCs, the tensor shapes),
    extracted into place atomically and recorded in a manifest with their
    sha256; a second run checks them and downloads nothing. An interrupted
    download resumes where it stopped.
    """
    config = DownloadConfig(
        path=path,
        url=url,
        from_zip=from_zip,
        force=force,
        files_url=files_url,
        zip_url=zip_url,
        retries=retries,
        read_timeout=timeout,
    )
    log = None if quiet else (lambda msg: click.echo(msg, err=True))
    result = download_authors(config, progress=not quiet, log=log)
    if result.status == "verified":
        click.echo(
            f"{result.target}: {len(result.files)} files verified against {MANIFEST_NAME} (sha256), "
            f"nothing to download (--force downloads again)"
        )
    else:
        click.echo(
            f"{result.target}: {len(result.files)} files, {result.total_bytes / 1e6:.1f} MB, "
            f"from {result.source} ({result.method}) in {result.seconds:.1f} s; manifest {MANIFEST_NAME}"
        )
    click.echo(f"next: redrep analyze --path {path}")
