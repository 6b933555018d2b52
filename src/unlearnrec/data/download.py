"""Fetch registered datasets from their public sources, checksum-verified and atomic.

Each file goes to a temp file in its target folder, is checked against the registry's
sha256 (or, for originals known only by their git id, the git blob sha1), fsynced and
renamed into place; on any failure the temp file is deleted and nothing is left behind.
Files already present and valid are skipped. A mirror that copies the data-root layout
(``BASE/<dataset path>/<file>``) can replace the canonical sources, through ``base_urls``
or ``$UNLEARNREC_DOWNLOAD_BASE`` (comma-separated), e.g. for air-gapped machines and tests.
Only ``urllib`` is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearnrec.data.formats import atomic_write_bytes, fsync_dir, lightgcn_text, read_lightgcn
from unlearnrec.data.registry import DatasetSpec, FileSpec, get_spec, resolve_data_root

__all__ = [
    "ENV_DOWNLOAD_BASE",
    "ChecksumError",
    "DownloadError",
    "FetchResult",
    "download_dataset",
    "file_digests",
    "git_blob_sha1",
    "verify_file",
]

ENV_DOWNLOAD_BASE = "UNLEARNREC_DOWNLOAD_BASE"
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's content does not match any checksum the registry knows for it."""


class DownloadError(OSError):
    """A file could not be fetched from any of its sources."""


@dataclass(frozen=True)
class FetchResult:
    """What happened to one file: ``downloaded``, ``present``, ``derived`` or ``skipped``."""

    name: str
    path: Path
    status: str
    source: str | None = None
    note: str = ""


# ----------------------------------------------------------------------------- checksums
def git_blob_sha1(data: bytes) -> str:
    """Git's object id of ``data`` as a blob: ``sha1(b"blob <len>\\0" + data)``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_digests(path: str | Path) -> dict[str, str | int]:
    """sha256, git blob sha1 and size of a file, in one streaming pass."""
    path = Path(path)
    size = path.stat().st_size
    sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha256.update(chunk)
            blob.update(chunk)
    return {"sha256": sha256.hexdigest(), "git_blob": blob.hexdigest(), "size": size}


def verify_file(fs: FileSpec, path: str | Path) -> bool:
    """Whether ``path`` matches one of ``fs``'s sha256 digests or its git blob id."""
    if not fs.sha256 and not fs.git_blob:
        raise ChecksumError(f"{fs.name}: the registry has no checksum for it, so it cannot be verified")
    d = file_digests(path)
    return d["sha256"] in fs.sha256 or (fs.git_blob is not None and d["git_blob"] == fs.git_blob)


def _expected(fs: FileSpec) -> str:
    parts = [f"sha256 {h}" for h in fs.sha256] + ([f"git blob {fs.git_blob}"] if fs.git_blob else [])
    return " or ".join(parts)


# ----------------------------------------------------------------------------- fetching
def _bases(base_urls: str | Sequence[str] | None) -> list[str]:
    if base_urls is None:
        base_urls = os.environ.get(ENV_DOWNLOAD_BASE, "")
    if isinstance(base_urls, str):
        base_urls = base_urls.replace(",", " ").split()
    return [b.rstrip("/") for b in base_urls if b.strip()]


def _open(url: str, timeout: float):
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"refusing to fetch {url!r}: only http, https and file URLs are supported")
    req = urllib.request.Request(url, headers={"User-Agent": "unlearnrec-downloader"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked above


def _stream(url: str, fh, progress: bool, label: str, timeout: float) -> None:
    from tqdm.auto import tqdm

    with _open(url, timeout) as resp:
        total = resp.headers.get("Content-Length")
        with tqdm(
            total=int(total) if total and total.isdigit() else None,
            unit="B",
            unit_scale=True,
            desc=label,
            disable=not progress,
            file=sys.stderr,
            leave=False,
        ) as bar:
            while chunk := resp.read(_CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))


def _fetch(url: str, dest: Path, fs: FileSpec, *, canonical: bool, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``dest`` atomically.

    From the canonical source the file may need building: ``fs.archive_member`` is extracted
    from the downloaded zip and ``fs.prepend`` written first. Mirrors serve the final file.
    """
    tmps: list[str] = []

    def tmp() -> tuple[int, str]:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmps.append(name)
        return fd, name

    try:
        archive = canonical and fs.archive_member is not None
        fd, final = tmp()
        with os.fdopen(fd, "wb") as out:
            if canonical:
                out.write(fs.prepend)
            if archive:
                zfd, zname = tmp()
                with os.fdopen(zfd, "wb") as zfh:
                    _stream(url, zfh, progress, dest.name, timeout)
                try:
                    with zipfile.ZipFile(zname) as zf, zf.open(fs.archive_member) as member:
                        while chunk := member.read(_CHUNK):
                            out.write(chunk)
                except (zipfile.BadZipFile, KeyError) as e:
                    raise DownloadError(f"{url}: cannot extract {fs.archive_member!r} ({e})") from None
            else:
                _stream(url, out, progress, dest.name, timeout)
            out.flush()
            os.fsync(out.fileno())
        if not verify_file(fs, final):
            got = file_digests(final)
            raise ChecksumError(
                f"{url}: checksum mismatch for {dest.name}: got sha256 {got['sha256']} "
                f"(git blob {got['git_blob']}, {got['size']} bytes), expected {_expected(fs)}; nothing was written"
            )
        os.replace(final, dest)
        tmps.remove(final)
        fsync_dir(dest.parent)
    finally:
        for name in tmps:
            Path(name).unlink(missing_ok=True)


def _sources(spec: DatasetSpec, fs: FileSpec, bases: list[str]) -> list[tuple[str, bool]]:
    """Candidate ``(url, is_canonical)`` pairs: mirrors (data-root layout) or the canonical source."""
    if bases:
        rel = urllib.parse.quote(f"{spec.path}/{fs.name}")
        return [(f"{b}/{rel}", False) for b in bases]
    if fs.url:
        return [(fs.url, True)]
    return []


# ----------------------------------------------------------------------------- derived datasets
def _derive_gowalla_tiny(src: Path, dest: Path) -> dict[str, bytes]:
    """gowalla-tiny's exact recipe (see its PROVENANCE.md): top-300 items, users < 1000, 5-core."""
    g = read_lightgcn(src / "train.txt", src / "test.txt")
    train, test = g.train, g.test
    deg = np.bincount(train[:, 1], minlength=g.n_items)
    top = np.zeros(g.n_items, dtype=bool)
    top[np.argsort(-deg, kind="stable")[:300]] = True
    train = train[(train[:, 0] < 1000) & top[train[:, 1]]]
    test = test[(test[:, 0] < 1000) & top[test[:, 1]]]
    while True:
        before = (len(train), len(test))
        u_tr = np.bincount(train[:, 0], minlength=g.n_users)
        i_tr = np.bincount(train[:, 1], minlength=g.n_items)
        test = test[(u_tr[test[:, 0]] > 0) & (i_tr[test[:, 1]] > 0)]
        u_te = np.bincount(test[:, 0], minlength=g.n_users)
        train = train[(u_tr[train[:, 0]] >= 5) & (i_tr[train[:, 1]] >= 5) & (u_te[train[:, 0]] > 0)]
        if (len(train), len(test)) == before:
            break
    users, items = np.unique(train[:, 0]), np.unique(train[:, 1])

    def remap(p: np.ndarray) -> np.ndarray:
        return np.stack([np.searchsorted(users, p[:, 0]), np.searchsorted(items, p[:, 1])], axis=1)

    def id_map(ids: np.ndarray) -> bytes:
        return ("tiny_id lightgcn_remap_id\n" + "".join(f"{k} {v}\n" for k, v in enumerate(ids.tolist()))).encode()

    return {
        "train.txt": lightgcn_text(remap(train)),
        "test.txt": lightgcn_text(remap(test)),
        "user_map.txt": id_map(users),
        "item_map.txt": id_map(items),
    }


_DERIVERS: dict[str, Callable[[Path, Path], dict[str, bytes]]] = {"gowalla-tiny": _derive_gowalla_tiny}


def _derive(spec: DatasetSpec, root: Path, kw: dict) -> list[FetchResult]:
    if spec.derived_from is None or spec.name not in _DERIVERS:
        raise DownloadError(f"dataset {spec.name!r} has no public source; copy its files into {root / str(spec.path)}")
    parent = get_spec(spec.derived_from)
    results = download_dataset(parent, root, **kw)
    dest = root / str(spec.path)
    contents = _DERIVERS[spec.name](root / str(parent.path), dest)
    for fs in spec.files:  # check every product before writing any of them
        probe = hashlib.sha256(contents[fs.name]).hexdigest()
        if fs.sha256 and probe not in fs.sha256:
            raise ChecksumError(f"derived {fs.name} of {spec.name} has sha256 {probe}, expected {_expected(fs)}")
    for fs in spec.files:
        atomic_write_bytes(dest / fs.name, contents[fs.name])
        results.append(FetchResult(fs.name, dest / fs.name, "derived", f"{parent.name} (recipe)"))
    return results


# ----------------------------------------------------------------------------- entry point
def download_dataset(
    name: str | DatasetSpec,
    data_root: str | os.PathLike | None = None,
    *,
    base_urls: str | Sequence[str] | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
) -> list[FetchResult]:
    """Fetch the files of dataset ``name`` into ``<data_root>/<its path>`` and verify them.

    Sources are the canonical public ones (pinned GitHub raw files; GroupLens for ml-100k,
    whose ``u.data`` becomes ``ml-100k.inter`` under a RecBole header) unless ``base_urls``
    or ``$UNLEARNREC_DOWNLOAD_BASE`` name mirrors laid out like a data root. ``gowalla-tiny``
    is rebuilt from ``gowalla`` by its published recipe. Present, valid files are skipped;
    a present file that fails its checksum raises :class:`ChecksumError` unless ``force``
    (then it is replaced). Optional files without a source are skipped.
    """
    spec = get_spec(name)
    if spec.path is None:
        return []  # built in, nothing to fetch
    root = resolve_data_root(data_root)
    folder = root / spec.path
    bases = _bases(base_urls)
    kw = dict(base_urls=base_urls, progress=progress, force=force, timeout=timeout)
    if not bases and spec.derived_from is not None and not all(f.url for f in spec.files):
        missing = [f for f in spec.files if not _valid_present(f, folder / f.name, force)]
        if missing:
            return _derive(spec, root, kw)
    created = [p for p in (folder, *folder.parents) if not p.exists() and root in (p, *p.parents)]
    results: list[FetchResult] = []
    try:
        _fetch_all(spec, folder, bases, results, force=force, progress=progress, timeout=timeout)
    except BaseException:
        # a failed download leaves nothing behind: the files this call fetched and the folders it made
        for r in results:
            if r.status == "downloaded":
                Path(r.path).unlink(missing_ok=True)
        for p in created:  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    return results


def _fetch_all(spec: DatasetSpec, folder: Path, bases: list[str], results: list[FetchResult], *, force: bool,
               progress: bool, timeout: float) -> None:
    """Fetch every file of ``spec`` into ``folder``, appending to ``results`` as it goes."""
    for fs in spec.files:
        dest = folder / fs.name
        if _valid_present(fs, dest, force):
            results.append(FetchResult(fs.name, dest, "present"))
            continue
        candidates = _sources(spec, fs, bases)
        if not candidates:
            if fs.required:
                raise DownloadError(f"{spec.name}/{fs.name} has no public source; copy it into {folder}")
            results.append(FetchResult(fs.name, dest, "skipped", note="optional file without a public source"))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        last: Exception | None = None
        for url, canonical in candidates:
            try:
                _fetch(url, dest, fs, canonical=canonical, progress=progress, timeout=timeout)
                results.append(FetchResult(fs.name, dest, "downloaded", url))
                break
            except ChecksumError as e:
                errors.append(str(e))
                last = e
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{url}: {e}")
                last = e
        else:
            if not fs.required:
                results.append(FetchResult(fs.name, dest, "skipped", note="; ".join(errors)))
                continue
            if isinstance(last, ChecksumError) and len(errors) == 1:
                raise last
            raise DownloadError(f"could not fetch {spec.name}/{fs.name}: " + "; ".join(errors)) from last


def _valid_present(fs: FileSpec, dest: Path, force: bool) -> bool:
    """True if ``dest`` exists and verifies; a corrupt file raises unless ``force``."""
    if not dest.is_file():
        return False
    if verify_file(fs, dest):
        return True
    if force:
        return False
    raise ChecksumError(
        f"{dest} exists but does not match {_expected(fs)}; delete it or download with force=True to replace it"
    )
