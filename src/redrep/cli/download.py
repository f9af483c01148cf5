"""``redrep download``: the authors' published representations into PATH/download_repr."""

from __future__ import annotations

from pathlib import Path

import click

from ..fetch.authors import (
    AUTHORS_RELEASE,
    FILES_URL,
    MANIFEST_NAME,
    MAX_ZIP_ENTRIES,
    ZIP_URL,
    DownloadConfig,
    download_authors,
)
from ..fetch.http import MAX_RETRIES, MAX_WAIT
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
@click.option(
    "--retries",
    type=int,
    default=4,
    show_default=True,
    help=f"Retries (0 to {MAX_RETRIES}) of a transient failure or a stall, waiting 0.5 s, 1 s, 2 s, ... "
    f"(at most {MAX_WAIT:g} s) between.",
)
@click.option(
    "--timeout",
    "read_timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for each piece of data.",
)
@click.option(
    "--stall-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds allowed for the response headers, and the window over which the body must average --min-rate; "
    "a slower server is a stall (retried; the partial file is kept for the resume).",
)
@click.option(
    "--min-rate",
    type=float,
    default=1000.0,
    show_default=True,
    help="Bytes per second a transfer must average over each --stall-timeout window (0: no minimum).",
)
@click.option(
    "--max-zip-mb",
    type=float,
    default=None,
    help="The most the article zip may be, downloaded or --from-zip, in MB [default: the set's files at their "
    f"largest, {AUTHORS_RELEASE.max_zip_size() / 1e6:.0f} MB]. A zip is also refused beyond {MAX_ZIP_ENTRIES} entries.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes.")
def command(path, quiet, **options):
    """Fetch the authors' WRN-28-8 / CIFAR-10 representations (figshare 21153040 v2).

    Files are verified (figshare's md5s, the zip's CRCs, the tensor shapes),
    extracted into place atomically and recorded in a manifest with their
    sha256; a second run checks them and downloads nothing. An interrupted
    download resumes where it stopped. A password in a URL (user:pw@host) is
    sent as HTTP basic authentication and never printed.
    """
    config = DownloadConfig(path=path, **options)  # the options are its fields
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
