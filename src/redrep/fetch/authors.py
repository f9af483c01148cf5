"""Fetch the authors' published representations (figshare article 21153040, v2).

The set (WRN-28-8 on CIFAR-10, see :data:`AUTHORS_RELEASE`) lands in
``<path>/download_repr/``, where :meth:`RepresentationSet.load_authors
<redrep.storage.repset.RepresentationSet.load_authors>` and ``redrep analyze --path``
find it. Three sources, tried in this order unless one is named:

1. figshare's files listing (``GET .../articles/21153040/versions/2``, its ``files``): one download
   per file, each verified against the listing's ``computed_md5``, staged in
   ``<path>/download_repr.partial/`` so that an interrupted run resumes;
2. the article zip (also a mirror given with ``url``), downloaded to
   ``<path>/download_repr.zip``: integrity-tested, checked for the expected
   members and for unsafe member paths, then extracted;
3. a zip fetched by hand (``from_zip``), checked the same way.

Whatever the source, the files are checked against the package's table of
what is known about them (:class:`KnownFile`: exact size and md5 where known,
tensor shapes), loaded once as a representation set, and a manifest with the
sha256 and size of each file is written beside them. Only then is the folder
renamed into place, so no half-written set ever sits at the target. A second
run verifies the files against the manifest and downloads nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from .. import __version__
from ..core.validation import RedrepError, check_float, check_int, exception_line
from ..storage import io
from ..storage.io import write_error
from ..storage.repset import AUTHORS_ENSEMBLE_FILE, AUTHORS_FILES, AUTHORS_SUBDIR, RepresentationSet
from .http import CHUNK_BYTES, check_url, download_file, file_md5, file_sha256, file_size, part_path

FIGSHARE_ARTICLE = 21153040
FIGSHARE_VERSION = 2
#: figshare's public API: the article's files, with name, size, download_url and computed_md5.
#: The article's version 2 record, whose ``files`` list the published files. (``.../files``
#: lists the latest version's files, which could change under the same article.)
FILES_URL = f"https://api.figshare.com/v2/articles/{FIGSHARE_ARTICLE}/versions/2"
#: The whole article (version 2) as one zip.
ZIP_URL = f"https://figshare.com/ndownloader/articles/{FIGSHARE_ARTICLE}/versions/{FIGSHARE_VERSION}"

#: Where a file's exact size is unknown, its estimate times this (plus :data:`SIZE_SLACK`) bounds what is accepted:
#: a download or zip member beyond it cannot be the file and is refused before it fills the disk.
SIZE_MARGIN = 1.5
SIZE_SLACK = 1 << 20
#: The most bytes figshare's files listing (a small JSON document) can be.
LISTING_MAX_BYTES = 16 << 20

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "redrep.download_manifest"
#: Where the article zip is downloaded to, below ``path`` (deleted once extracted).
ZIP_NAME = f"{AUTHORS_SUBDIR}.zip"
#: Where per-file downloads are staged, below ``path`` (renamed into place when complete).
STAGING_NAME = f"{AUTHORS_SUBDIR}.partial"


@dataclass(frozen=True)
class KnownFile:
    """What the package knows about one published file.

    name : file name (the authors' spelling)
    shape : tensor shape, checked after download; None where unknown
    approx_size : bytes, an estimate from the shape (float32 / int64 payload plus
        torch's container); used for the free-space check only
    size : exact bytes, verified when not None
    md5 : hex md5, verified when not None
    """

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


_PT_OVERHEAD = 2048  # torch.save's zip container around the raw tensor bytes: 1.8-2.5 kB with torch 2.x


def _tensor_file(key: str, shape: tuple[int, ...], itemsize: int) -> KnownFile:
    n = 1
    for s in shape:
        n *= s
    return KnownFile(AUTHORS_FILES[key], shape, n * itemsize + _PT_OVERHEAD)


#: The authors' WRN-28-8 / CIFAR-10 set (docs/method.md#inputs), with the shapes given there; exact sizes and md5s
#: are not published with the article and were not known when this table was written (figshare
#: was unreachable), so they are None and only the listing's md5s, the zip's CRCs, the shapes and
#: a load of the whole set verify a download. Fill ``size``/``md5`` once read from the listing.
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


@dataclass
class DownloadConfig:
    """Options of one download (saved in the manifest).

    path : data folder; the set goes to ``path/download_repr``
    url : a mirror of the article zip (skips the files listing)
    from_zip : a zip fetched by hand (no network at all)
    force : download again even if the manifest verifies
    files_url, zip_url : figshare's files listing and article zip
    retries, backoff, connect_timeout, read_timeout : passed to :func:`redrep.fetch.http.download_file`
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

    def __post_init__(self):
        self.path = str(self.path)
        if self.from_zip is not None:
            self.from_zip = str(self.from_zip)
        if self.url is not None and self.from_zip is not None:
            raise RedrepError("url and from_zip: expected at most one source, found both")
        if self.url is not None:
            try:
                self.url = check_url(self.url)
            except RedrepError as exc:
                raise RedrepError(f"url: {exc}") from None
        self.retries = check_int(self.retries, "retries", min_value=0)
        self.backoff = check_float(self.backoff, "backoff", min_value=0.0)
        self.connect_timeout = check_float(self.connect_timeout, "connect_timeout", min_value=1e-3)
        self.read_timeout = check_float(self.read_timeout, "read_timeout", min_value=1e-3)


@dataclass
class DownloadResult:
    """What :func:`download_authors` did.

    target : the folder holding the set
    status : "verified" (nothing downloaded) or "installed"
    method : "manifest", "files", "zip" or "from-zip"
    source : the URL or file the set came from
    files : {name: size in bytes}
    seconds : wall time
    notes : what happened on the way (a fallback, a re-download)
    """

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


# ------------------------------------------------------------------ entry point
def download_authors(
    config: DownloadConfig,
    *,
    release: Release | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> DownloadResult:
    """Put the authors' set into ``config.path/download_repr``, verified.

    Parameters
    ----------
    config : DownloadConfig
    release : Release, optional
        What to expect; :data:`AUTHORS_RELEASE` by default.
    progress : bool
        Progress bars on stderr.
    log : callable, optional
        Receives one-line notes (the source used, a fallback, a skip).

    Returns
    -------
    DownloadResult

    Raises
    ------
    RedrepError
        With one line, for any failure. What stays behind is only what a
        later run can resume from: a ``.part`` file, the staged files of
        ``download_repr.partial/`` or a complete ``download_repr.zip``.
    """
    path = Path(config.path)
    created = not path.exists()
    try:
        if path.exists() and not path.is_dir():
            raise RedrepError(f"{path}: expected a data folder, found a file")
        # one download into a folder at a time; the lock also clears a killed run's temporary folders
        with io.folder_lock(path / AUTHORS_SUBDIR, what="download"):
            return _download(config, release, progress, log)
    except RedrepError:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # leave no empty data folder behind a failure
        raise


def _download(config, release, progress, log) -> DownloadResult:
    release = AUTHORS_RELEASE if release is None else release
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    path = Path(config.path)
    target = path / AUTHORS_SUBDIR
    if target.exists() and not target.is_dir():
        raise RedrepError(f"{target}: expected a folder for the authors' set, found a file")
    notes: list[str] = []

    def note(msg):
        notes.append(msg)
        say(msg)

    if target.is_dir() and not config.force:
        manifest = target / MANIFEST_NAME
        if manifest.is_file():
            problems = verify_manifest(target, release)
            if not problems:
                files = {n: (target / n).stat().st_size for n in release.names}
                return DownloadResult(target, "verified", "manifest", str(manifest), files, time.perf_counter() - t0)
            note(f"{target}: {problems[0]}; downloading again")
        elif any(target.iterdir()):
            raise RedrepError(
                f"{target}: exists without {MANIFEST_NAME} (not written by `redrep download`); expected a missing "
                f"or empty folder, or force to replace it"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RedrepError(f"{path}: cannot create the data folder ({exc.strerror or exc})") from None

    fetch_kw = dict(
        retries=config.retries,
        backoff=config.backoff,
        timeout=(config.connect_timeout, config.read_timeout),
        progress=progress,
    )
    if config.from_zip is not None:
        zpath = Path(config.from_zip)
        if not zpath.is_file():
            raise RedrepError(f"{zpath}: no such file (expected the article zip fetched by hand)")
        say(f"checking {zpath}")
        files = install_zip(zpath, target, release, source={"method": "from-zip", "file": str(zpath)}, config=config)
        method, source = "from-zip", str(zpath)
    elif config.url is not None:
        files = _zip_route(config.url, path, target, release, config, fetch_kw, say)
        method, source = "zip", config.url
    else:
        say(f"reading the files listing {config.files_url}")
        try:
            listing = list_files(config.files_url, **{**fetch_kw, "progress": False})
        except RedrepError as exc:
            note(f"files listing unavailable ({exc}); fetching the article zip instead")
            files = _zip_route(config.zip_url, path, target, release, config, fetch_kw, say)
            method, source = "zip", config.zip_url
        else:
            files = _files_route(listing, config.files_url, path, target, release, config, fetch_kw, say)
            method, source = "files", config.files_url
    sizes = {n: files[n]["size"] for n in release.names}
    return DownloadResult(target, "installed", method, source, sizes, time.perf_counter() - t0, notes)


# ------------------------------------------------------------------- manifest
def verify_manifest(target, release: Release | None = None) -> list[str]:
    """Check the files of ``target`` against its manifest; returns the problems found (none: verified).

    Every file of ``release`` must be listed, and every listed file must
    exist with the recorded size and sha256.
    """
    release = AUTHORS_RELEASE if release is None else release
    target = Path(target)
    mpath = target / MANIFEST_NAME
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
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
            continue
        if not f.is_file():
            problems.append(f"{name} missing")
            continue
        try:
            size, digest = int(entry["size"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{MANIFEST_NAME}: bad entry for {name}")
            continue
        found = f.stat().st_size
        if found != size:
            problems.append(f"{name}: size {found} bytes, the manifest says {size}")
        elif file_sha256(f) != digest:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def _write_manifest(folder: Path, files: dict, source: dict, release: Release, config: DownloadConfig) -> None:
    doc = {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "article": release.article,
        "version": release.version,
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "redrep_version": __version__,
        "config": asdict(config),
        "files": {n: files[n] for n in sorted(files)},
    }
    io.write_json(folder / MANIFEST_NAME, doc)


# -------------------------------------------------------------- files listing
@dataclass(frozen=True)
class RemoteFile:
    """One entry of figshare's files listing."""

    name: str
    url: str
    size: int | None
    md5: str | None


_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


def list_files(files_url: str, **fetch_kw) -> list[RemoteFile]:
    """Read figshare's files listing: a JSON list of ``{name, size, download_url, computed_md5}``,
    or an article (version) record holding that list under ``files``."""
    with tempfile.TemporaryDirectory(prefix="redrep-listing-") as tmp:
        f = download_file(files_url, Path(tmp) / "files.json", max_bytes=LISTING_MAX_BYTES, **fetch_kw)
        raw = f.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RedrepError(f"{files_url}: expected a JSON files listing, could not parse it ({exc})") from None
    except RecursionError:
        raise RedrepError(f"{files_url}: expected a JSON files listing, found JSON nested too deeply") from None
    if isinstance(doc, dict) and isinstance(doc.get("files"), list):
        doc = doc["files"]
    if not isinstance(doc, list):
        raise RedrepError(f"{files_url}: expected a JSON list of files, found {type(doc).__name__}")
    out = []
    for i, item in enumerate(doc):
        if not (
            isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("download_url"), str)
        ):
            raise RedrepError(f"{files_url}: entry {i}: expected an object with name and download_url, found {item!r}")
        size = item.get("size")
        md5 = item.get("computed_md5") or None
        if md5 is not None and not (isinstance(md5, str) and _MD5.match(md5)):
            raise RedrepError(f"{files_url}: {item['name']}: expected a hex md5 in computed_md5, found {md5!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise RedrepError(f"{files_url}: {item['name']}: expected a byte count in size, found {size!r}")
        out.append(RemoteFile(item["name"], item["download_url"], size, md5.lower() if md5 else None))
    return out


def _files_route(listing, files_url, path, target, release, config, fetch_kw, say) -> dict:
    remote = {}
    for r in listing:
        remote.setdefault(r.name, r)
    missing = [n for n in release.names if n not in remote]
    if missing:
        raise RedrepError(f"{files_url}: missing file(s) in the listing: {', '.join(missing)}")
    staging = path / STAGING_NAME
    try:
        staging.mkdir(exist_ok=True)
    except OSError as exc:
        raise RedrepError(f"{staging}: cannot create it ({exc.strerror or exc})") from None
    plan = []
    for kf in release.files:
        r = remote[kf.name]
        for what, ours, theirs in (("size", kf.size, r.size), ("md5", kf.md5, r.md5)):
            if ours is not None and theirs is not None and str(ours).lower() != str(theirs).lower():
                raise RedrepError(
                    f"{files_url}: {kf.name}: the listing gives {what} {theirs}, the package's table {ours} "
                    f"(the published file changed?)"
                )
        plan.append((kf, r, r.md5 or kf.md5, r.size if r.size is not None else kf.size))

    todo = []
    for kf, r, md5, size in plan:
        dest = staging / kf.name
        if dest.is_file() and (size is None or dest.stat().st_size == size) and (md5 is None or file_md5(dest) == md5):
            say(f"{kf.name}: fetched by an earlier run, verified")
            continue
        todo.append((kf, r, md5, size))
    need = 0
    for kf, _, _, size in todo:
        need += (size if size is not None else kf.approx_size) - file_size(part_path(staging / kf.name))
    _check_space(path, need)
    for i, (kf, r, md5, size) in enumerate(todo, 1):
        download_file(
            r.url,
            staging / kf.name,
            md5=md5,
            size=size,
            max_bytes=kf.max_size,
            desc=f"[{i}/{len(todo)}] {kf.name}",
            **fetch_kw,
        )

    files = {}
    for kf in release.files:
        f = staging / kf.name
        files[kf.name] = {"size": f.stat().st_size, "sha256": file_sha256(f), "md5": file_md5(f)}
    try:
        _check_against_table(files, release, where=files_url)
        check_contents(staging, release, label=files_url)
    except RedrepError:
        shutil.rmtree(staging, ignore_errors=True)  # verified against the listing yet wrong: nothing to resume
        raise
    for extra in staging.iterdir():  # e.g. a .part of a file the listing no longer has
        if extra.name not in files:
            _remove(extra)
    _write_manifest(staging, files, {"method": "files", "url": files_url}, release, config)
    io.swap_into_place(staging, target)
    return files


# ------------------------------------------------------------------------ zip
def _zip_route(url, path, target, release, config, fetch_kw, say) -> dict:
    zpath = path / ZIP_NAME
    if zpath.is_file():
        say(f"{zpath}: downloaded by an earlier run, checking it")
    else:
        _check_space(path, 2 * release.total_approx_size() - file_size(part_path(zpath)))
        say(f"downloading {url}")
        download_file(url, zpath, desc=ZIP_NAME, max_bytes=release.max_zip_size(), **fetch_kw)
    try:
        files = install_zip(zpath, target, release, source={"method": "zip", "url": url}, config=config)
    except _BadZip as exc:
        _remove(zpath)  # complete but wrong: a later run must download it anew
        raise RedrepError(f"{exc} (deleted {zpath}; run again to download it anew)") from None
    _remove(zpath)
    return files


class _BadZip(RedrepError):
    """The archive itself is wrong (corrupt, incomplete, unsafe)."""


def check_zip(zpath, release: Release | None = None) -> dict[str, str]:
    """Test a zip's integrity, its member paths and its expected members.

    Returns ``{expected name: member name in the zip}``. Members may sit in a
    folder of the zip; every member path must stay inside the extraction
    folder (no absolute paths, no ``..``, no links), otherwise the archive is
    refused as a whole.
    """
    release = AUTHORS_RELEASE if release is None else release
    zpath = Path(zpath)
    try:
        zf = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile as exc:
        raise _BadZip(f"{zpath}: corrupt zip ({exc}{_looks_like(zpath)})") from None
    except OSError as exc:
        raise RedrepError(f"{zpath}: cannot read it ({exc.strerror or exc})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            if not _safe_member(info):
                raise _BadZip(
                    f"{zpath}: unsafe member path {info.filename!r} (it would be written outside the target "
                    f"folder); refusing the archive"
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
        out = {}
        for kf in release.files:
            found = by_base[kf.name]
            if len(found) > 1:
                raise _BadZip(f"{zpath}: {len(found)} members named {kf.name}; expected one")
            info = found[0]
            if kf.size is not None and info.file_size != kf.size:
                raise _BadZip(
                    f"{zpath}: {info.filename}: size mismatch, expected {kf.size} bytes, found {info.file_size}"
                )
            if info.file_size > kf.max_size:
                raise _BadZip(
                    f"{zpath}: {info.filename}: {info.file_size} bytes uncompressed, more than the {kf.max_size} "
                    f"bytes it can be (about {kf.approx_size} expected); refusing the archive"
                )
            out[kf.name] = info.filename
        # read the members we take through (bounded above): the CRC of each is checked at its end;
        # other members are never extracted, so never read
        for member in out.values():
            try:
                with zf.open(member) as f:
                    while f.read(CHUNK_BYTES):
                        pass
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
                raise _BadZip(f"{zpath}: corrupt zip ({member}: {exc})") from None
    return out


def install_zip(zpath, target, release: Release | None = None, *, source: dict, config: DownloadConfig) -> dict:
    """Check ``zpath``, extract the expected members into a temporary folder and rename it onto ``target``.

    Returns ``{name: {size, sha256, md5}}`` (also written to the manifest).
    """
    release = AUTHORS_RELEASE if release is None else release
    zpath, target = Path(zpath), Path(target)
    members = check_zip(zpath, release)
    with zipfile.ZipFile(zpath) as zf:
        total = sum(zf.getinfo(m).file_size for m in members.values())
        free = _free_bytes(target.parent)
        if free is not None and free < total:
            raise RedrepError(_space_line(target.parent, free, total))
        with io.atomic_dir(target) as tmp:
            files = {}
            limits = {kf.name: kf.max_size for kf in release.files}
            for name, member in members.items():
                files[name] = _extract_member(zf, member, tmp / name, zpath, limits[name])
            io.crash_point("download:extracted")
            try:
                _check_against_table(files, release, where=str(zpath))
                check_contents(tmp, release, label=str(zpath))
            except RedrepError as exc:
                raise _BadZip(str(exc)) from None
            _write_manifest(tmp, files, {**source, "zip_sha256": file_sha256(zpath)}, release, config)
    return files


def _extract_member(zf: zipfile.ZipFile, member: str, dest: Path, zpath: Path, limit: int) -> dict:
    sha, md5, n = hashlib.sha256(), hashlib.md5(), 0
    try:
        with zf.open(member) as src, open(dest, "wb") as out:
            while block := src.read(CHUNK_BYTES):
                if n + len(block) > limit:  # the header may lie: count what comes out
                    raise _BadZip(f"{zpath}: {member}: expands past {limit} bytes, more than it can be")
                sha.update(block)
                md5.update(block)
                n += len(block)
                try:
                    out.write(block)
                except OSError as exc:
                    raise write_error(exc, dest) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _BadZip(f"{zpath}: corrupt zip ({member}: {exc})") from None
    except OSError as exc:
        raise write_error(exc, dest) from None
    return {"size": n, "sha256": sha.hexdigest(), "md5": md5.hexdigest()}


# ------------------------------------------------------------------- checking
def check_contents(folder, release: Release | None = None, *, label: str | None = None) -> None:
    """Load the set in ``folder``: known tensor shapes, then the whole set as a representation set.

    Errors name the files relative to ``label`` (the source) rather than the
    temporary folder they sit in.
    """
    from ..storage.repset import _load_pt

    release = AUTHORS_RELEASE if release is None else release
    folder = Path(folder)
    label = str(folder) if label is None else label
    try:
        for kf in release.files:
            if kf.shape is None or not kf.name.endswith(".pt"):
                continue
            shape = tuple(_load_pt(folder / kf.name).shape)
            if _squeeze(shape) != _squeeze(kf.shape):
                raise RedrepError(
                    f"{kf.name}: expected a tensor of shape {kf.shape} (docs/method.md#inputs), found {shape}"
                )
        RepresentationSet.load_authors(folder)
    except RedrepError as exc:
        msg = str(exc).replace(str(folder) + os.sep, "").replace(str(folder), label)
        raise RedrepError(f"{label}: {msg}") from None


def _check_against_table(files: dict, release: Release, where: str) -> None:
    for kf in release.files:
        got = files[kf.name]
        if kf.size is not None and got["size"] != kf.size:
            raise RedrepError(f"{where}: {kf.name}: size mismatch, expected {kf.size} bytes, found {got['size']}")
        if kf.md5 is not None and got["md5"] != kf.md5.lower():
            raise RedrepError(f"{where}: {kf.name}: md5 mismatch, expected {kf.md5}, found {got['md5']}")


def _squeeze(shape):
    return tuple(s for s in shape if s != 1)


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _safe_member(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\0" in name:
        return False
    if any(part == ".." for part in re.split(r"[/\\]", name)):
        return False
    mode = (info.external_attr >> 16) & 0o170000
    return mode != 0o120000  # a symbolic link could point anywhere


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


# ---------------------------------------------------------------------- disk
def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _space_line(path, free, need) -> str:
    return f"no space left on device: {path} has {free / 1e6:.1f} MB free, the download needs about {need / 1e6:.1f} MB"


def _check_space(path: Path, need: int) -> None:
    free = _free_bytes(path)
    if free is not None and need > 0 and free < need:
        raise RedrepError(_space_line(path, free, need))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
