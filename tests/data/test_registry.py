"""The dataset registry: data-root resolution, listing, errors, and the real datasets' sizes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from unlearnrec.data import registry
from unlearnrec.data.errors import UnknownDatasetError
from unlearnrec.data.registry import (
    DATASETS,
    DatasetSpec,
    FileSpec,
    dataset_info,
    list_datasets,
    load_dataset,
    register_dataset,
    resolve_data_root,
)

EXPECTED = {"ml-1m", "ml-1m-lightgcnpp", "gowalla", "yelp2018", "ml-100k", "gowalla-tiny", "synthetic"}


def test_resolve_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("UNLEARNREC_DATA", raising=False)
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "unlearnrec" / "data"
    monkeypatch.setenv("UNLEARNREC_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"


def test_registry_contents() -> None:
    assert EXPECTED <= set(DATASETS)
    for spec in DATASETS.values():
        assert spec.description and spec.sources
        for f in spec.files:
            assert f.sha256 or f.git_blob, f"{spec.name}/{f.name} has no checksum"
            assert all(len(h) == 64 for h in f.sha256)
            assert f.url is None or f.url.startswith("https://")
    assert DATASETS["ml-1m"].n_items == 3706 and DATASETS["ml-1m"].path == "ml-1m/receraser"


def test_unknown_dataset() -> None:
    with pytest.raises(UnknownDatasetError) as exc:
        load_dataset("ml-2m")
    msg = str(exc.value)
    assert "ml-2m" in msg and "ml-1m" in msg and "gowalla" in msg and "synthetic" in msg
    with pytest.raises(UnknownDatasetError):
        dataset_info("nope")


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        load_dataset("ml-1m", tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "ml-1m" / "receraser" / "train.txt") in msg
    assert "unlearnrec data download ml-1m" in msg and "--data-root" in msg and "UNLEARNREC_DATA" in msg


def test_list_and_info_on_empty_root(tmp_path: Path) -> None:
    rows = {r["name"]: r for r in list_datasets(tmp_path)}
    assert EXPECTED <= set(rows)
    assert rows["synthetic"]["present"] and rows["synthetic"]["path"] is None
    assert not rows["gowalla"]["present"] and rows["gowalla"]["path"] == str(tmp_path / "gowalla")
    assert rows["gowalla"]["n_users"] == 29_858
    info = dataset_info("ml-1m", tmp_path)
    assert info["validation"].startswith("carved") and not info["present"]
    assert {f["name"] for f in info["files"]} == {"train.txt", "test.txt"}
    assert "Recommendation Unlearning" in info["citation"]


def test_synthetic_is_built_in(tmp_path: Path) -> None:
    d = load_dataset("synthetic", tmp_path / "nowhere")
    assert (d.n_users, d.n_items) == (600, 400) and len(d.valid) > 0


def test_registered_lightgcn_dataset_gets_carved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(registry, "DATASETS", dict(DATASETS))
    spec = DatasetSpec(
        name="toy",
        description="toy",
        path="toy",
        format="lightgcn",
        files=(FileSpec("train.txt", sha256=("0" * 64,)), FileSpec("test.txt", sha256=("0" * 64,))),
        splits={"train": "train.txt", "test": "test.txt"},
        n_items=12,
        carve_valid=True,
        sources=("test",),
    )
    register_dataset(spec)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(spec)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "train.txt").write_text(
        "".join(f"{u} " + " ".join(map(str, range(10))) + "\n" for u in range(3))
    )
    (tmp_path / "toy" / "test.txt").write_text("0 10\n1 11\n")
    d = load_dataset("toy", tmp_path, valid_fraction=0.2, seed=5)
    assert (d.n_users, d.n_items, d.name) == (3, 12, "toy")
    assert (len(d.train), len(d.valid)) == (24, 6)
    assert len(load_dataset("toy", tmp_path, valid_fraction=0.0).valid) == 0
    assert any(r["name"] == "toy" and r["present"] for r in registry.list_datasets(tmp_path))


def test_registered_files_are_checked_cheaply_on_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Sizes on every load, checksums once per file version (remembered): a truncated or edited file loads
    with a warning that names it; an intact one costs no second checksum."""
    import hashlib

    from unlearnrec.data import download
    from unlearnrec.data.errors import DataWarning

    monkeypatch.setenv("UNLEARNREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "DATASETS", dict(DATASETS))
    folder = tmp_path / "root" / "toy2"
    folder.mkdir(parents=True)
    train = "".join(f"{u} " + " ".join(map(str, range(8))) + "\n" for u in range(4)).encode()
    test = b"0 8\n1 9\n2 9\n3 8\n"
    (folder / "train.txt").write_bytes(train)
    (folder / "test.txt").write_bytes(test)
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    register_dataset(DatasetSpec(
        name="toy2", description="toy", path="toy2", format="lightgcn",
        files=(FileSpec("train.txt", sha256=(sha(train),), size=len(train)), FileSpec("test.txt", sha256=(sha(test),))),
        splits={"train": "train.txt", "test": "test.txt"}, carve_valid=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("toy2", tmp_path / "root")  # intact: no warning
    calls = []
    with monkeypatch.context() as m:
        m.setattr(download, "verify_file", lambda f, p: calls.append(p) or True)
        load_dataset("toy2", tmp_path / "root")
    assert calls == []  # remembered: no second checksum of an unchanged file
    (folder / "test.txt").write_bytes(test.replace(b"3 8", b"3 9"))  # edited, same size
    with pytest.warns(DataWarning, match="test.txt: its checksum is not the registered copy"):
        load_dataset("toy2", tmp_path / "root")
    (folder / "train.txt").write_bytes(train[: len(train) // 2].rsplit(b"\n", 1)[0] + b"\n")  # truncated
    with pytest.warns(DataWarning, match="train.txt: [0-9]+ bytes, but the registered copy of toy2 has"):
        load_dataset("toy2", tmp_path / "root")


# ----------------------------------------------------------------------------- real data
def _total_train(d) -> int:
    return len(d.train) + len(d.valid)


def test_real_ml1m(require_dataset, data_root: Path) -> None:
    require_dataset("ml-1m")
    d = load_dataset("ml-1m", data_root)
    assert (d.n_users, d.n_items) == (6040, 3706)
    assert _total_train(d) == 720_152 and len(d.test) == 200_041
    assert 0.09 < len(d.valid) / 720_152 < 0.11
    assert np.bincount(d.train[:, 0], minlength=d.n_users).min() >= 1
    assert load_dataset("ml-1m", data_root).fingerprint() == d.fingerprint()
    assert load_dataset("ml-1m", data_root, seed=1).fingerprint() != d.fingerprint()


def test_real_gowalla_tiny(require_dataset, data_root: Path) -> None:
    require_dataset("gowalla-tiny")
    d = load_dataset("gowalla-tiny", data_root)
    assert (d.n_users, d.n_items) == (342, 228)
    assert _total_train(d) == 5_217 and len(d.test) == 1_645 and len(d.valid) > 0
    assert all(f["valid"] for f in dataset_info("gowalla-tiny", data_root, verify=True)["files"])


def test_real_ml1m_lightgcnpp(require_dataset, data_root: Path) -> None:
    require_dataset("ml-1m-lightgcnpp")
    d = load_dataset("ml-1m-lightgcnpp", data_root)
    assert (d.n_users, d.n_items) == (6039, 3628)
    assert (len(d.train), len(d.valid), len(d.test)) == (590_733, 80_897, 164_848)  # shipped valid, not carved


def test_real_ml100k(require_dataset, data_root: Path) -> None:
    require_dataset("ml-100k")
    d = load_dataset("ml-100k", data_root)
    assert (d.n_users, d.n_items) == (943, 1682)
    assert _total_train(d) + len(d.test) == 100_000 and len(d.valid) > 9_000


@pytest.mark.parametrize(
    "name, sizes",
    [("gowalla", (29_858, 40_981, 810_128, 217_242)), ("yelp2018", (31_668, 38_048, 1_237_259, 324_147))],
)
def test_real_lightgcn_benchmarks(require_dataset, data_root: Path, name: str, sizes: tuple) -> None:
    require_dataset(name)
    d = load_dataset(name, data_root)
    assert (d.n_users, d.n_items, _total_train(d), len(d.test)) == sizes
