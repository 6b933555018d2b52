"""Downloads against a local HTTP server only: verified, atomic, skipping valid files."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from unlearnrec.data import registry
from unlearnrec.data.download import (
    ENV_DOWNLOAD_BASE,
    ChecksumError,
    DownloadError,
    download_dataset,
    git_blob_sha1,
    verify_file,
)
from unlearnrec.data.registry import DatasetSpec, FileSpec, load_dataset

TRAIN = b"0 0 1 2\n1 1 2\n2 0 3\n"
TEST = b"0 3\n1 0\n2 1\n"
NOTES = b"optional notes\n"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class _Server:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def put(self, rel: str, data: bytes) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    s = _Server(tmp_path / "www")
    s.root.mkdir()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DOWNLOAD_BASE, raising=False)


def _spec(train_sum: str | None = None, **train_kw) -> DatasetSpec:
    train = dict(sha256=(train_sum or _sha(TRAIN),))
    train.update(train_kw)
    return DatasetSpec(
        name="toy-dl",
        description="toy",
        path="toy/split",
        format="lightgcn",
        files=(
            FileSpec("train.txt", **train),
            FileSpec("test.txt", git_blob=git_blob_sha1(TEST)),  # verified by its git blob id only
            FileSpec("notes.txt", sha256=(_sha(NOTES),), required=False),
        ),
        splits={"train": "train.txt", "test": "test.txt"},
        carve_valid=True,
        sources=("local test server",),
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_git_blob_sha1() -> None:
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`


def test_good_download_then_skip(server: _Server, tmp_path: Path) -> None:
    server.put("toy/split/train.txt", TRAIN)
    server.put("toy/split/test.txt", TEST)
    server.put("toy/split/notes.txt", NOTES)
    root = tmp_path / "data"
    res = download_dataset(_spec(), root, base_urls=server.url, progress=False)
    assert [(r.name, r.status) for r in res] == [
        ("train.txt", "downloaded"),
        ("test.txt", "downloaded"),
        ("notes.txt", "downloaded"),
    ]
    folder = root / "toy" / "split"
    assert (folder / "train.txt").read_bytes() == TRAIN and (folder / "test.txt").read_bytes() == TEST
    assert _leftovers(folder) == ["notes.txt", "test.txt", "train.txt"]
    d = load_dataset(_spec(), root, valid_fraction=0.0)
    assert (d.n_users, d.n_items, len(d.train)) == (3, 4, 7)

    n = len(server.requests)
    res = download_dataset(_spec(), root, base_urls=[server.url], progress=False)
    assert {r.status for r in res} == {"present"} and len(server.requests) == n  # nothing fetched


def test_env_mirror_and_registry_name(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.put("toy/split/train.txt", TRAIN)
    server.put("toy/split/test.txt", TEST)  # no notes.txt: optional, so skipped
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    registry.register_dataset(_spec())
    monkeypatch.setenv(ENV_DOWNLOAD_BASE, f"http://127.0.0.1:9/dead, {server.url}")  # first mirror is down
    res = download_dataset("toy-dl", tmp_path / "data", progress=False)
    assert [r.status for r in res] == ["downloaded", "downloaded", "skipped"]
    assert res[0].source == f"{server.url}/toy/split/train.txt"


def test_bad_checksum_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    server.put("toy/split/train.txt", TRAIN + b"3 3\n")  # tampered
    server.put("toy/split/test.txt", TEST)
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match="checksum mismatch for train.txt"):
        download_dataset(_spec(), root, base_urls=server.url, progress=False)
    assert _leftovers(root / "toy" / "split") == []  # no file, no temp file


def test_git_blob_mismatch_and_missing_required(server: _Server, tmp_path: Path) -> None:
    server.put("toy/split/train.txt", TRAIN)
    server.put("toy/split/test.txt", TEST.replace(b"3", b"2"))
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match="git blob"):
        download_dataset(_spec(), root, base_urls=server.url, progress=False)
    assert not (root / "toy").exists()  # a failed download leaves nothing: not the good file, not the folders
    (server.root / "toy/split/test.txt").unlink()
    with pytest.raises(DownloadError, match="404"):
        download_dataset(_spec(), root, base_urls=server.url, progress=False)
    assert not (root / "toy").exists()
    # a file that was there before the failed call stays
    (root / "toy" / "split").mkdir(parents=True)
    (root / "toy" / "split" / "train.txt").write_bytes(TRAIN)
    with pytest.raises(DownloadError, match="404"):
        download_dataset(_spec(), root, base_urls=server.url, progress=False)
    assert _leftovers(root / "toy" / "split") == ["train.txt"]


def test_corrupt_present_file(server: _Server, tmp_path: Path) -> None:
    server.put("toy/split/train.txt", TRAIN)
    server.put("toy/split/test.txt", TEST)
    folder = tmp_path / "data" / "toy" / "split"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_bytes(b"0 0\n")
    with pytest.raises(ChecksumError, match="force=True"):
        download_dataset(_spec(), tmp_path / "data", base_urls=server.url, progress=False)
    assert (folder / "train.txt").read_bytes() == b"0 0\n"  # untouched
    res = download_dataset(_spec(), tmp_path / "data", base_urls=server.url, progress=False, force=True)
    assert res[0].status == "downloaded" and (folder / "train.txt").read_bytes() == TRAIN


def test_canonical_zip_member_with_header(server: _Server, tmp_path: Path) -> None:
    """The ml-100k route: a member of a zip under a RecBole header, verified after conversion."""
    u_data = b"1\t10\t5\t100\n1\t11\t3\t101\n2\t10\t4\t102\n"
    header = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml/u.data", u_data)
        zf.writestr("ml/README", "x")
    server.put("dl/ml.zip", buf.getvalue())
    fs = FileSpec("toy.inter", sha256=(_sha(header + u_data),), url=f"{server.url}/dl/ml.zip",
                  archive_member="ml/u.data", prepend=header)
    spec = DatasetSpec("toy-zip", "zip", "toy-zip", "recbole", (fs,), {"inter": "toy.inter"}, sources=("x",))
    root = tmp_path / "data"
    res = download_dataset(spec, root, progress=False)
    assert res[0].status == "downloaded"
    assert (root / "toy-zip" / "toy.inter").read_bytes() == header + u_data
    assert _leftovers(root / "toy-zip") == ["toy.inter"]  # the zip itself is gone
    assert load_dataset(spec, root).n_users == 2

    bad = FileSpec("toy.inter", sha256=(_sha(header + u_data),), url=f"{server.url}/dl/ml.zip", archive_member="nope")
    spec2 = DatasetSpec("toy-zip", "zip", "toy-zip2", "recbole", (bad,), {"inter": "toy.inter"}, sources=("x",))
    with pytest.raises(DownloadError, match="cannot extract"):
        download_dataset(spec2, root, progress=False)
    assert _leftovers(root / "toy-zip2") == []


def test_refuses_other_schemes(tmp_path: Path) -> None:
    fs = FileSpec("a.txt", sha256=("0" * 64,), url="ftp://x/a.txt")
    spec = DatasetSpec("t", "t", "t", "lightgcn", (fs,), sources=("x",))
    with pytest.raises(DownloadError, match="only http, https and file"):
        download_dataset(spec, tmp_path, progress=False)


def test_builtin_needs_nothing(tmp_path: Path) -> None:
    assert download_dataset("synthetic", tmp_path) == []


def test_gowalla_tiny_rebuilt_from_gowalla(require_dataset, tmp_path: Path) -> None:
    """gowalla-tiny has no public URL: it is rebuilt from gowalla, byte for byte."""
    src = require_dataset("gowalla")
    (tmp_path / "gowalla").mkdir()
    for f in ("train.txt", "test.txt", "user_list.txt", "item_list.txt"):
        os.symlink(src / f, tmp_path / "gowalla" / f)
    res = download_dataset("gowalla-tiny", tmp_path, progress=False)
    assert [r.status for r in res] == ["present"] * 4 + ["derived"] * 4
    for fs in registry.DATASETS["gowalla-tiny"].files:
        assert verify_file(fs, tmp_path / "gowalla-tiny" / fs.name)
    assert all(r.status == "present" for r in download_dataset("gowalla-tiny", tmp_path, progress=False))
