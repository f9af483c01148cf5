"""The authors' published representations (figshare article 21153040, version 2) into ``PATH/download_repr``.

Three sources, in this order unless one is named: figshare's version-2 files listing, one pooch fetch
per file through :class:`~redrep.fetch.http.RangeDownloader` (checked against the listing's
``computed_md5``, staged in ``PATH/download_repr.partial/`` so that an interrupted run resumes); the
article zip, or a mirror of it (``url``); a zip fetched by hand (``from_zip``). A zip is refused if it
is larger than the set can be, if its end record counts too many entries (read before :mod:`zipfile`
lists them), or if a member would land outside the target or expands past what its file can be. The
files are checked against the package's table (:class:`KnownFile`) and loaded as a representation set;
a manifest records the size and digests of each; only then is the folder renamed into place. A second
run verifies the manifest and downloads nothing. The listing is read here, not by pooch's
``FigshareRepository``, which resolves only through doi.org and api.figshare.com: a mirror or a local
server could not stand in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pooch

from .. import __version__
from ..core.validation import RedrepError, check_float, exception_line
from ..storage import io
from ..storage.io import write_error
from ..storage.repset import AUTHORS_ENSEMBLE_FILE, AUTHORS_FILES, AUTHORS_SUBDIR, RepresentationSet
from .http import (
    CHUNK_BYTES,
    Limits,
    RangeDownloader,
    check_url,
    download_file,
    file_sha256,
    file_size,
    part_path,
    redact,
)

FIGSHARE_ARTICLE = 21153040
FIGSHARE_VERSION = 2
#: The article's version-2 record, whose ``files`` (name, size, download_url, computed_md5) are the
#: published files (``.../files`` would list the latest version's, which could change).
FILES_URL = f"https://api.figshare.com/v2/articles/{FIGSHARE_ARTICLE}/versions/{FIGSHARE_VERSION}"
#: The whole article (version 2) as one zip.
ZIP_URL = f"https://figshare.com/ndownloader/articles/{FIGSHARE_ARTICLE}/versions/{FIGSHARE_VERSION}"
#: Where a file's exact size is unknown, its estimate times SIZE_MARGIN plus SIZE_SLACK bounds what is
#: accepted: a download or zip member beyond it cannot be the file and is refused before it fills the disk.
SIZE_MARGIN, SIZE_SLACK = 1.5, 1 << 20
#: The most bytes figshare's files listing (a small JSON document) can be.
LISTING_MAX_BYTES = 16 << 20
#: The most entries, and central-directory bytes, a zip of the set may have (it holds 7 files).
MAX_ZIP_ENTRIES, MAX_CD_BYTES = 1000, 1 << 20
MANIFEST_NAME, MANIFEST_FORMAT = "manifest.json", "redrep.download_manifest"
#: Below ``path``: the downloaded article zip (deleted once extracted), and the staged per-file downloads.
ZIP_NAME, STAGING_NAME = f"{AUTHORS_SUBDIR}.zip", f"{AUTHORS_SUBDIR}.partial"


@dataclass(frozen=True)
class KnownFile:
    """What the package knows about one published file: its name, tensor shape (None: unknown), size
    estimate in bytes (for the free-space check), and exact size and hex md5 where known (verified)."""

    name: str
    shape: tuple[int, ...] | None
    approx_size: int
    size: int | None = None
    md5: str | None = None

    @property
    def max_size(self) -> int:
        """The most bytes this file can be: its exact size, else the estimate with a margin."""
        return self.size if self.size is not None else int(self.approx_size * SIZE_MARGIN) + SIZE_SLACK


@dataclass(frozen=True)
class Release:
    """A published set: its figshare article and the files it must hold."""

    article: int
    version: int
    files: tuple[KnownFile, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def total_approx_size(self) -> int:
        return sum(f.size if f.size is not None else f.approx_size for f in self.files)

    def max_zip_size(self) -> int:
        """The most bytes the article zip can be: its files at their largest, plus the zip's own records."""
        return sum(f.max_size for f in self.files) + SIZE_SLACK


def _tensor_file(key: str, shape: tuple[int, ...], itemsize: int) -> KnownFile:
    # torch.save's zip container adds 1.8-2.5 kB around the raw tensor bytes (torch 2.x)
    return KnownFile(AUTHORS_FILES[key], shape, itemsize * math.prod(shape) + 2048)


#: The authors' WRN-28-8 / CIFAR-10 set (docs/method.md#inputs) with its shapes. No sizes or md5s are
#: published with the article, so only the listing's md5s, the zip's CRCs, the shapes and a load of the
#: whole set verify a download; fill ``size``/``md5`` once read from the listing.
AUTHORS_RELEASE = Release(
    article=FIGSHARE_ARTICLE,
    version=FIGSHARE_VERSION,
    files=(
        _tensor_file("features_train", (50000, 512), 4),  # ~102.4 MB
        _tensor_file("features_test", (10000, 512), 4),  # ~20.5 MB
        _tensor_file("labels_train", (50000,), 8),
        _tensor_file("labels_test", (10000,), 8),
        _tensor_file("weight", (10, 512), 4),
        _tensor_file("bias", (10,), 4),
        KnownFile(AUTHORS_ENSEMBLE_FILE, None, 4096),  # a small .npy; [0] = ensemble test accuracy
    ),
)


_LIMITS = ("retries", "backoff", "connect_timeout", "read_timeout", "stall_timeout", "min_rate")


@dataclass
class DownloadConfig:
    """Options of one download (saved in the manifest, URLs without their passwords).

    path : data folder; the set goes to ``path/download_repr``
    url : a mirror of the article zip (skips the files listing); from_zip : a zip fetched by hand
    force : download again even if the manifest verifies
    files_url, zip_url : figshare's files listing and article zip
    retries, backoff, connect_timeout, read_timeout, stall_timeout, min_rate : see :class:`~.http.Limits`
    max_zip_mb : the most the article zip may be, in MB (None: the set's files at their largest)
    """

    path: str = "data"
    url: str | None = None
    from_zip: str | None = None
    force: bool = False
    files_url: str = FILES_URL
    zip_url: str = ZIP_URL
    retries: int = 4
    backoff: float = 0.5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    stall_timeout: float = 30.0
    min_rate: float = 1000.0
    max_zip_mb: float | None = None

    def __post_init__(self):
        self.path, self.from_zip = str(self.path), None if self.from_zip is None else str(self.from_zip)
        if self.url is not None and self.from_zip is not None:
            raise RedrepError("url and from_zip: expected at most one source, found both")
        if self.url is not None:
            try:
                self.url = check_url(self.url)
            except RedrepError as exc:
                raise RedrepError(f"url: {exc}") from None
        limits = self.limits()  # validated there
        for name in _LIMITS:
            setattr(self, name, getattr(limits, name))
        self.max_zip_mb = check_float(self.max_zip_mb, "max_zip_mb", min_value=1e-6, allow_none=True)

    def limits(self) -> Limits:
        return Limits(**{name: getattr(self, name) for name in _LIMITS})

    def zip_limit(self, release: Release) -> int:
        return release.max_zip_size() if self.max_zip_mb is None else int(self.max_zip_mb * 1e6)


@dataclass
class DownloadResult:
    """What :func:`download_authors` did: the folder holding the set; ``status`` "verified" (nothing
    downloaded) or "installed"; ``method`` "manifest", "files", "zip" or "from-zip"; the source (URL or
    file); {name: size in bytes}; wall time in seconds; notes (a fallback, a re-download)."""

    target: Path
    status: str
    method: str
    source: str
    files: dict = field(default_factory=dict)
    seconds: float = 0.0
    notes: list = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return int(sum(self.files.values()))


@dataclass
class _Run:
    """One call of :func:`download_authors`: its options, what to expect, and where notes go."""

    config: DownloadConfig
    release: Release
    progress: bool
    say: Callable[[str], None]
    notes: list = field(default_factory=list)

    def __post_init__(self):
        self.path, self.t0 = Path(self.config.path), time.perf_counter()
        self.target = self.path / AUTHORS_SUBDIR

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.say(msg)

    def result(self, status: str, method: str, source: str, files: dict) -> DownloadResult:
        seconds = time.perf_counter() - self.t0
        return DownloadResult(self.target, status, method, redact(source), files, seconds, self.notes)


# ------------------------------------------------------------------ entry point
def download_authors(config: DownloadConfig, *, release=None, progress=True, log=None) -> DownloadResult:
    """Put the authors' set into ``config.path/download_repr``, verified.

    ``release`` says what to expect (:data:`AUTHORS_RELEASE` by default); ``progress`` shows bars on
    stderr; ``log`` receives one-line notes. Any failure raises a one-line RedrepError; what stays
    behind is only what a later run resumes from: a ``.part`` file, the staged files of
    ``download_repr.partial/`` or a complete ``download_repr.zip``.
    """
    path = Path(config.path)
    created = not path.exists()
    try:
        if path.exists() and not path.is_dir():
            raise RedrepError(f"{path}: expected a data folder, found a file")
        # one download into a folder at a time; the lock also clears a killed run's temporary folders
        with io.folder_lock(path / AUTHORS_SUBDIR, what="download"):
            run = _Run(config, release or AUTHORS_RELEASE, progress, log or (lambda msg: None))
            return _installed(run) or _fetch(run)
    except RedrepError:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # leave no empty data folder behind a failure
        raise


def _installed(run: _Run) -> DownloadResult | None:
    """The result when the set is already there and verifies against its manifest, else None."""
    target, manifest = run.target, run.target / MANIFEST_NAME
    if target.exists() and not target.is_dir():
        raise RedrepError(f"{target}: expected a folder for the authors' set, found a file")
    if not target.is_dir() or run.config.force:
        return None
    if manifest.is_file():
        problems = verify_manifest(target, run.release)
        if not problems:
            return run.result(
                "verified", "manifest", str(manifest), {n: (target / n).stat().st_size for n in run.release.names}
            )
        run.note(f"{target}: {problems[0]}; downloading again")
    elif any(target.iterdir()):
        raise RedrepError(
            f"{target}: exists without {MANIFEST_NAME} (not written by `redrep download`); expected a missing "
            f"or empty folder, or force to replace it"
        )
    return None


def _fetch(run: _Run) -> DownloadResult:
    config = run.config
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RedrepError(f"{run.path}: cannot create the data folder ({exc.strerror or exc})") from None
    if config.from_zip is not None:
        zpath = Path(config.from_zip)
        if not zpath.is_file():
            raise RedrepError(f"{zpath}: no such file (expected the article zip fetched by hand)")
        run.say(f"checking {zpath}")
        files = install_zip(
            zpath, run.target, run.release, source={"method": "from-zip", "file": str(zpath)}, config=config
        )
        method, source = "from-zip", str(zpath)
    elif config.url is not None:
        method, source, files = "zip", config.url, _zip_route(run, config.url)
    else:
        run.say(f"reading the files listing {redact(config.files_url)}")
        try:
            listing = list_files(config.files_url, config.limits())
        except RedrepError as exc:
            run.note(f"files listing unavailable ({exc}); fetching the article zip instead")
            method, source, files = "zip", config.zip_url, _zip_route(run, config.zip_url)
        else:
            method, source, files = "files", config.files_url, _files_route(run, listing)
    return run.result("installed", method, source, {n: files[n]["size"] for n in run.release.names})


# ------------------------------------------------------------------- manifest
def verify_manifest(target, release: Release | None = None) -> list[str]:
    """The problems found checking ``target``'s files against its manifest (none: verified): every
    file of ``release`` listed, every listed file present with the recorded size and sha256."""
    release, target = release or AUTHORS_RELEASE, Path(target)
    try:
        doc = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))
        entries = doc["files"]
        if doc.get("format") != MANIFEST_FORMAT or not isinstance(entries, dict):
            raise ValueError("not a redrep download manifest")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        return [f"{MANIFEST_NAME} unreadable ({type(exc).__name__}: {exception_line(exc)})"]
    problems = [f"{n} not in {MANIFEST_NAME}" for n in release.names if n not in entries]
    for name, entry in entries.items():
        f = target / name
        if not _plain_name(name):
            problems.append(f"{MANIFEST_NAME} lists an unsafe name {name!r}")
        elif not f.is_file():
            problems.append(f"{name} missing")
        elif not (isinstance(entry, dict) and isinstance(entry.get("size"), int) and "sha256" in entry):
            problems.append(f"{MANIFEST_NAME}: bad entry for {name}")
        elif (found := f.stat().st_size) != entry["size"]:
            problems.append(f"{name}: size {found} bytes, the manifest says {entry['size']}")
        elif file_sha256(f) != str(entry["sha256"]):
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def _write_manifest(folder: Path, files: dict, source: dict, release: Release, config: DownloadConfig) -> None:
    settings = {k: redact(v) if k.endswith("url") and v else v for k, v in asdict(config).items()}
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc = {"format": MANIFEST_FORMAT, "format_version": 1, "article": release.article, "version": release.version,
           "source": source, "created": created, "redrep_version": __version__, "config": settings,
           "files": {n: files[n] for n in sorted(files)}}  # fmt: skip
    io.write_json(folder / MANIFEST_NAME, doc)


def _digests(blocks, out=None) -> dict:
    """Size, sha256 and md5 of a stream of byte blocks, written on to ``out`` where given."""
    sha, md5, n = hashlib.sha256(), hashlib.md5(), 0
    for block in blocks:
        sha.update(block)
        md5.update(block)
        n += len(block)
        if out is not None:
            out.write(block)
    return {"size": n, "sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _file_digests(path: Path) -> dict:
    with open(path, "rb") as f:
        return _digests(iter(lambda: f.read(CHUNK_BYTES), b""))


# -------------------------------------------------------------- files listing
@dataclass(frozen=True)
class RemoteFile:
    """One entry of figshare's files listing."""

    name: str
    url: str
    size: int | None
    md5: str | None


def list_files(files_url: str, limits: Limits | None = None) -> list[RemoteFile]:
    """Read figshare's files listing: a JSON list of ``{name, size, download_url, computed_md5}``,
    or an article (version) record holding that list under ``files``."""
    shown = redact(files_url)
    with tempfile.TemporaryDirectory(prefix="redrep-listing-") as tmp:
        f = download_file(
            files_url, Path(tmp) / "files.json", max_bytes=LISTING_MAX_BYTES, progress=False, limits=limits
        )
        raw = f.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RedrepError(f"{shown}: expected a JSON files listing, could not parse it ({exc})") from None
    except RecursionError:
        raise RedrepError(f"{shown}: expected a JSON files listing, found JSON nested too deeply") from None
    doc = doc["files"] if isinstance(doc, dict) and isinstance(doc.get("files"), list) else doc
    if not isinstance(doc, list):
        raise RedrepError(f"{shown}: expected a JSON list of files, found {type(doc).__name__}")
    out = []
    for i, item in enumerate(doc):
        if not (
            isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("download_url"), str)
        ):
            raise RedrepError(f"{shown}: entry {i}: expected an object with name and download_url, found {item!r}")
        size, md5 = item.get("size"), item.get("computed_md5") or None
        if md5 is not None and not (isinstance(md5, str) and re.fullmatch(r"[0-9a-fA-F]{32}", md5)):
            raise RedrepError(f"{shown}: {item['name']}: expected a hex md5 in computed_md5, found {md5!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise RedrepError(f"{shown}: {item['name']}: expected a byte count in size, found {size!r}")
        out.append(RemoteFile(item["name"], item["download_url"], size, md5.lower() if md5 else None))
    return out


def _files_route(run: _Run, listing: list[RemoteFile]) -> dict:
    """Each file through a pooch registry of the listing's md5s, staged, then swapped into place."""
    remote = {}
    for r in listing:
        remote.setdefault(r.name, r)
    shown = redact(run.config.files_url)
    missing = [n for n in run.release.names if n not in remote]
    if missing:
        raise RedrepError(f"{shown}: missing file(s) in the listing: {', '.join(missing)}")
    staging = run.path / STAGING_NAME
    store, gets = pooch.Pooch(path=staging, base_url="", registry={}, urls={}), {}
    for kf in run.release.files:
        r = remote[kf.name]
        for what, ours, theirs in (("size", kf.size, r.size), ("md5", kf.md5, r.md5)):
            if ours is not None and theirs is not None and str(ours).lower() != str(theirs).lower():
                raise RedrepError(
                    f"{shown}: {kf.name}: the listing gives {what} {theirs}, the package's table {ours} "
                    f"(the published file changed?)"
                )
        md5, size = r.md5 or kf.md5, r.size if r.size is not None else kf.size
        store.registry[kf.name], store.urls[kf.name] = md5 and f"md5:{md5}", r.url
        gets[kf.name] = RangeDownloader(staging / kf.name, md5=md5, size=size, max_bytes=kf.max_size,
                                        limits=run.config.limits(), progress=run.progress)  # fmt: skip
    todo = [kf for kf in run.release.files if not gets[kf.name].dest.is_file()]  # staged: verified when renamed in
    _check_space(run.path, sum((kf.size or kf.approx_size) - file_size(gets[kf.name].part) for kf in todo))
    with _quiet(pooch.get_logger()):  # pooch logs each URL at INFO level on stderr
        for i, (name, get) in enumerate(gets.items(), 1):
            get.desc = f"[{i}/{len(gets)}] {name}"
            store.fetch(name, downloader=get)  # pooch checks the md5 again before renaming into staging
    files = {kf.name: _file_digests(staging / kf.name) for kf in run.release.files}
    try:  # the listing's sizes and md5s, and the table's, were checked by the downloader
        check_contents(staging, run.release, label=shown)
    except RedrepError:
        shutil.rmtree(staging, ignore_errors=True)  # verified against the listing yet wrong: nothing to resume
        raise
    for extra in staging.iterdir():  # e.g. a .part of a file the listing no longer has
        if extra.name not in files:
            _remove(extra)
    _write_manifest(staging, files, {"method": "files", "url": shown}, run.release, run.config)
    io.swap_into_place(staging, run.target)
    return files


@contextlib.contextmanager
def _quiet(logger):
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------ zip
def _zip_route(run: _Run, url: str) -> dict:
    zpath = run.path / ZIP_NAME
    if zpath.is_file():
        run.say(f"{zpath}: downloaded by an earlier run, checking it")
    else:
        _check_space(run.path, 2 * run.release.total_approx_size() - file_size(part_path(zpath)))
        run.say(f"downloading {redact(url)}")
        limit = run.config.zip_limit(run.release)
        download_file(url, zpath, desc=ZIP_NAME, max_bytes=limit, progress=run.progress, limits=run.config.limits())
    try:
        files = install_zip(
            zpath, run.target, run.release, source={"method": "zip", "url": redact(url)}, config=run.config
        )
    except _BadZip as exc:
        _remove(zpath)  # complete but wrong: a later run must download it anew
        raise RedrepError(f"{exc} (deleted {zpath}; run again to download it anew)") from None
    _remove(zpath)
    return files


class _BadZip(RedrepError):
    """The archive itself is wrong (corrupt, incomplete, unsafe, too large)."""


def _check_directory(zpath: Path, limit: int) -> None:
    """Refuse a zip larger than ``limit`` bytes, or whose end record announces more entries (or central-
    directory bytes) than the set can have: :mod:`zipfile` would build the whole list in memory first."""
    with open(zpath, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if end > limit:
            raise _BadZip(f"{zpath}: {end} bytes, more than the {limit} bytes the article zip can be (--max-zip-mb)")
        f.seek(max(0, end - 22 - 0xFFFF))
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return  # no end record: zipfile says so
        count, cd_size = struct.unpack_from("<HL", tail, at + 10)
        if at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":  # zip64: the real counts are in its own record
            f.seek(struct.unpack_from("<Q", tail, at - 12)[0])
            record = f.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                count, cd_size = struct.unpack_from("<QQ", record, 32)
    if count > MAX_ZIP_ENTRIES or cd_size > MAX_CD_BYTES:
        raise _BadZip(
            f"{zpath}: {count} entries ({cd_size} bytes) in its central directory, more than the {MAX_ZIP_ENTRIES} "
            f"entries ({MAX_CD_BYTES} bytes) the article zip can have; refusing the archive"
        )


def check_zip(zpath, release: Release | None = None, *, max_bytes: int | None = None) -> dict[str, str]:
    """Test a zip's size, entry count, member paths, expected members and their integrity.

    Returns ``{expected name: member name in the zip}``. Members may sit in a folder of the zip; every
    member path must stay inside the extraction folder (no absolute paths, no ``..``, no links),
    otherwise the archive is refused as a whole. ``max_bytes`` bounds the zip (default: the release's).
    """
    release, zpath = release or AUTHORS_RELEASE, Path(zpath)
    try:
        _check_directory(zpath, release.max_zip_size() if max_bytes is None else max_bytes)
        zf = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile as exc:
        raise _BadZip(f"{zpath}: corrupt zip ({exc}{_looks_like(zpath)})") from None
    except OSError as exc:
        raise RedrepError(f"{zpath}: cannot read it ({exc.strerror or exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise _BadZip(f"{zpath}: {len(infos)} entries, more than the {MAX_ZIP_ENTRIES} the article zip can have")
        unsafe = [i.filename for i in infos if not _safe_member(i)]
        if unsafe:
            raise _BadZip(
                f"{zpath}: unsafe member path {unsafe[0]!r} (it would be written outside the target folder); "
                f"refusing the archive"
            )
        by_base: dict[str, list] = {}
        for info in infos:
            if not info.is_dir():
                by_base.setdefault(PurePosixPath(info.filename).name, []).append(info)
        missing = [n for n in release.names if n not in by_base]
        if missing:
            raise _BadZip(
                f"{zpath}: missing member(s) {', '.join(missing)} (expected the authors' files, docs/method.md#inputs)"
            )
        out = {kf.name: _check_member(zpath, kf, by_base[kf.name]) for kf in release.files}
        for member in out.values():  # read through (bounded above): the CRC of each is checked at its end
            for _ in _blocks(zf, member, zpath, None):
                pass
    return out


def _check_member(zpath: Path, kf: KnownFile, found: list) -> str:
    if len(found) > 1:
        raise _BadZip(f"{zpath}: {len(found)} members named {kf.name}; expected one")
    info = found[0]
    if kf.size is not None and info.file_size != kf.size:
        raise _BadZip(f"{zpath}: {info.filename}: size mismatch, expected {kf.size} bytes, found {info.file_size}")
    if info.file_size > kf.max_size:
        raise _BadZip(
            f"{zpath}: {info.filename}: {info.file_size} bytes uncompressed, more than the {kf.max_size} "
            f"bytes it can be (about {kf.approx_size} expected); refusing the archive"
        )
    return info.filename


def install_zip(zpath, target, release: Release | None = None, *, source: dict, config: DownloadConfig) -> dict:
    """Check ``zpath``, extract the expected members into a temporary folder and rename it onto ``target``.

    Returns ``{name: {size, sha256, md5}}`` (also written to the manifest).
    """
    release, zpath, target = release or AUTHORS_RELEASE, Path(zpath), Path(target)
    members = check_zip(zpath, release, max_bytes=config.zip_limit(release))
    with zipfile.ZipFile(zpath) as zf:
        _check_space(target.parent, sum(zf.getinfo(m).file_size for m in members.values()))
        with io.atomic_dir(target) as tmp:
            limits = {kf.name: kf.max_size for kf in release.files}
            files = {n: _extract_member(zf, m, tmp / n, zpath, limits[n]) for n, m in members.items()}
            io.crash_point("download:extracted")
            try:  # sizes were bounded while extracting; md5s where the table knows them
                for kf in release.files:
                    if kf.md5 is not None and files[kf.name]["md5"] != kf.md5.lower():
                        found = files[kf.name]["md5"]
                        raise RedrepError(f"{zpath}: {kf.name}: md5 mismatch, expected {kf.md5}, found {found}")
                check_contents(tmp, release, label=str(zpath))
            except RedrepError as exc:
                raise _BadZip(str(exc)) from None
            _write_manifest(tmp, files, {**source, "zip_sha256": file_sha256(zpath)}, release, config)
    return files


def _blocks(zf: zipfile.ZipFile, member: str, zpath: Path, limit: int | None):
    """The bytes of a member, block by block; corrupt data or more than ``limit`` bytes (the header
    may lie: what comes out is counted) raise _BadZip."""
    n = 0
    try:
        with zf.open(member) as src:
            while block := src.read(CHUNK_BYTES):
                n += len(block)
                if limit is not None and n > limit:
                    raise _BadZip(f"{zpath}: {member}: expands past {limit} bytes, more than it can be")
                yield block
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise _BadZip(f"{zpath}: corrupt zip ({member}: {exc})") from None


def _extract_member(zf: zipfile.ZipFile, member: str, dest: Path, zpath: Path, limit: int) -> dict:
    try:
        with open(dest, "wb") as out:
            return _digests(_blocks(zf, member, zpath, limit), out)
    except OSError as exc:
        raise write_error(exc, dest) from None


# ------------------------------------------------------------------- checking
def check_contents(folder, release: Release | None = None, *, label: str | None = None) -> None:
    """Load the set in ``folder``: known tensor shapes, then the whole set as a representation set.

    Errors name the files relative to ``label`` (the source) rather than the temporary folder they sit in.
    """
    from ..storage.repset import _load_pt

    release, folder = release or AUTHORS_RELEASE, Path(folder)
    label = str(folder) if label is None else label
    try:
        for kf in release.files:
            if kf.shape is None or not kf.name.endswith(".pt"):
                continue
            shape = tuple(_load_pt(folder / kf.name).shape)
            if tuple(s for s in shape if s != 1) != tuple(s for s in kf.shape if s != 1):
                raise RedrepError(
                    f"{kf.name}: expected a tensor of shape {kf.shape} (docs/method.md#inputs), found {shape}"
                )
        RepresentationSet.load_authors(folder)
    except RedrepError as exc:
        msg = str(exc).replace(str(folder) + os.sep, "").replace(str(folder), label)
        raise RedrepError(f"{label}: {msg}") from None


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _safe_member(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\0" in name:
        return False
    if ".." in re.split(r"[/\\]", name):
        return False
    return (info.external_attr >> 16) & 0o170000 != 0o120000  # a symbolic link could point anywhere


def _looks_like(zpath: Path) -> str:
    try:
        with open(zpath, "rb") as f:
            head = f.read(64)
    except OSError:
        return ""
    if not head:
        return "; the file is empty"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"{")):
        return "; it looks like a web page or an API reply, not the article zip"
    return ""


def _check_space(path: Path, need: int) -> None:
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return
    if need > 0 and free < need:
        need_mb, free_mb = need / 1e6, free / 1e6
        raise RedrepError(
            f"no space left on device: {path} has {free_mb:.1f} MB free, the download needs about {need_mb:.1f} MB"
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
