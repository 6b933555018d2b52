"""Readers: LightGCN text, RecBole atomic files, CSV/TSV, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unlearnrec.data.errors import DataFormatError
from unlearnrec.data.formats import (
    lightgcn_text,
    read_csv,
    read_lightgcn,
    read_pairs_table,
    read_recbole,
    write_lightgcn,
)
from unlearnrec.data.interactions import pair_keys


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _assert_error(exc: pytest.ExceptionInfo, path: Path, line: int | None, reason: str) -> None:
    msg = str(exc.value)
    assert path.name in msg
    assert reason in msg
    assert exc.value.reason and reason in exc.value.reason
    if line is not None:
        assert exc.value.line == line
        assert f"{path.name}:{line}:" in msg


# ----------------------------------------------------------------------------- LightGCN
def test_lightgcn_basic_and_tolerant(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.txt", b"0 1 2 \r\n\r\n1 0\r\n3\r\n  \r\n2 2 4   \r\n")
    test = _write(tmp_path / "test.txt", "0 3\n1 5\n")
    d = read_lightgcn(train, test, name="toy")
    assert d.name == "toy"
    # user 3 has a line with no items; item 5 occurs only in test: both still get an index
    assert (d.n_users, d.n_items) == (4, 6)
    assert d.train.tolist() == [[0, 1], [0, 2], [1, 0], [2, 2], [2, 4]]
    assert d.test.tolist() == [[0, 3], [1, 5]]
    assert len(d.valid) == 0
    assert d.user_ids.tolist() == ["0", "1", "2", "3"]  # index == raw id
    assert d.item_index(["5"]).tolist() == [5]


def test_lightgcn_valid_and_size_overrides(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.txt", "0 0 1\n1 1\n")
    valid = _write(tmp_path / "valid.txt", "0 2\n")
    test = _write(tmp_path / "test.txt", "1 0\n4 2\n")  # user 4 only in test
    d = read_lightgcn(train, test, valid, n_items=10)
    assert (d.n_users, d.n_items) == (5, 10)
    assert d.valid.tolist() == [[0, 2]]
    assert d.name == tmp_path.name
    with pytest.raises(DataFormatError, match="n_items=2"):
        read_lightgcn(train, test, valid, n_items=2)


@pytest.mark.parametrize(
    "train, line, reason",
    [
        ("0 1\n1 2 x\n", 2, "non-integer id 'x'"),
        ("0 1\n\n1 2.5\n", 3, "non-integer id '2.5'"),
        ("0 1 2\n1 1-2\n", 2, "non-integer id '1-2'"),
        ("0 1\n1 -3\n", 2, "negative id -3"),
        ("0 1\n-1 3\n", 2, "negative id -1"),
        ("0 1\n1 99999999\n", 2, "far larger than the file"),
        ("0 1 2\n1 2\n0 3 1\n", 3, "duplicate (user, item) pairs in the train split: 1 repeated row(s)"),
    ],
)
def test_lightgcn_bad_train(tmp_path: Path, train: str, line: int, reason: str) -> None:
    path = _write(tmp_path / "train.txt", train)
    test = _write(tmp_path / "test.txt", "0 5\n")
    with pytest.raises(DataFormatError) as exc:
        read_lightgcn(path, test)
    _assert_error(exc, path, line, reason)


def test_lightgcn_duplicate_report_counts(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.txt", "0 1 1 1 2\n1 2 2\n")
    test = _write(tmp_path / "test.txt", "0 5\n")
    with pytest.raises(DataFormatError) as exc:
        read_lightgcn(path, test)
    _assert_error(exc, path, 1, "3 repeated row(s) over 2 pair(s); first: user 0 item 1 on line 1 repeats line 1")


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n"])
def test_lightgcn_empty_file(tmp_path: Path, content: bytes) -> None:
    train = _write(tmp_path / "train.txt", "0 1\n")
    test = _write(tmp_path / "test.txt", content)
    with pytest.raises(DataFormatError) as exc:
        read_lightgcn(train, test)
    _assert_error(exc, test, None, "empty file")


def test_lightgcn_overlaps(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.txt", "0 1 2 3\n1 4\n")
    test = _write(tmp_path / "test.txt", "0 5\n1 4\n0 2\n")
    with pytest.raises(DataFormatError) as exc:
        read_lightgcn(train, test)
    _assert_error(exc, test, 2, "train/test overlap: 2 pair(s) of test are also in train")
    assert "first: user 1 item 4 on line 2 (line 2 of train.txt)" in str(exc.value)

    valid = _write(tmp_path / "valid.txt", "0 5\n")
    test2 = _write(tmp_path / "test2.txt", "1 7\n0 5\n")
    with pytest.raises(DataFormatError) as exc:
        read_lightgcn(train, test2, valid)
    _assert_error(exc, test2, 2, "valid/test overlap: 1 pair(s)")


def test_lightgcn_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_lightgcn(tmp_path / "nope.txt", tmp_path / "test.txt")


def test_write_lightgcn_roundtrip(tmp_path: Path) -> None:
    pairs = np.array([[2, 5], [0, 3], [0, 1], [2, 0]])
    assert lightgcn_text(pairs) == b"0 1 3\n2 0 5\n"
    write_lightgcn(tmp_path / "train.txt", pairs)
    write_lightgcn(tmp_path / "test.txt", [[1, 2]])
    d = read_lightgcn(tmp_path / "train.txt", tmp_path / "test.txt")
    assert sorted(map(tuple, d.train.tolist())) == sorted(map(tuple, pairs.tolist()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.txt", "train.txt"]  # no temp files left


def test_lightgcn_reads_real_ml1m(require_dataset) -> None:  # its speed: benchmarks/data_speed.py
    folder = require_dataset("ml-1m")
    d = read_lightgcn(folder / "train.txt", folder / "test.txt")
    assert (len(d.train), len(d.test)) == (720_152, 200_041)


# ----------------------------------------------------------------------------- RecBole
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def _inter(path: Path, rows: list[tuple], header: str = HEADER) -> Path:
    return _write(path, header + "".join("\t".join(map(str, r)) + "\n" for r in rows))


def _rows(n_users: int = 20, per_user: int = 10) -> list[tuple]:
    return [(u + 1, (u * 7 + k) % 50 + 1, (u + k) % 5 + 1, 1000 + k) for u in range(n_users) for k in range(per_user)]


def test_recbole_single_file_split(tmp_path: Path) -> None:
    path = _inter(tmp_path / "toy.inter", _rows())
    d = read_recbole(path, seed=1)
    assert d.name == "toy"
    assert d.n_users == 20 and (len(d.train), len(d.valid), len(d.test)) == (160, 20, 20)
    assert d.user_ids[:3].tolist() == ["1", "2", "3"]
    # same vocabulary for a folder or prefix path, and the same split for the same seed
    assert read_recbole(tmp_path / "toy", seed=1).fingerprint() == d.fingerprint()
    assert read_recbole(path, seed=2).fingerprint() != d.fingerprint()
    keys = [set(pair_keys(s, d.n_items).tolist()) for s in (d.train, d.valid, d.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_recbole_numeric_vocab_order_and_threshold(tmp_path: Path) -> None:
    rows = [(10, 100, 5, 1), (9, 100, 1, 2), (2, 7, 4, 3), (10, 7, 3, 4), (2, 100, 5, 5)]
    path = _inter(tmp_path / "x.inter", rows)
    d = read_recbole(path, ratios=(1.0, 0.0))
    assert d.user_ids.tolist() == ["2", "9", "10"]  # numeric, not lexicographic, order
    assert d.item_ids.tolist() == ["7", "100"]
    t = read_recbole(path, rating_threshold=4, ratios=(1.0, 0.0))
    assert t.user_ids.tolist() == ["2", "10"] and len(t.train) == 3  # user 9 only rated below 4


def test_recbole_split_files(tmp_path: Path) -> None:
    _inter(tmp_path / "ds.train.inter", [("a", "x", 1, 1), ("b", "y", 1, 1)])
    _inter(tmp_path / "ds.valid.inter", [("a", "y", 1, 1)])
    _inter(tmp_path / "ds.test.inter", [("c", "z", 1, 1)])  # user c and item z only in test
    for where in (tmp_path / "ds", tmp_path / "ds.train.inter"):
        d = read_recbole(where)
        assert (d.n_users, d.n_items) == (3, 3)
        assert (len(d.train), len(d.valid), len(d.test)) == (2, 1, 1)
        assert d.test.tolist() == [[d.user_index("c")[0], d.item_index("z")[0]]]
    _inter(tmp_path / "ds.test.inter", [("c", "z", 1, 1), ("b", "y", 1, 1)])
    with pytest.raises(DataFormatError) as exc:
        read_recbole(tmp_path / "ds")
    _assert_error(exc, tmp_path / "ds.test.inter", 3, "train/test overlap: 1 pair(s)")


def test_recbole_temporal_split(tmp_path: Path) -> None:
    rows = [(1, i, 5, 100 - i) for i in range(10)]  # item 0 is the latest
    d = read_recbole(_inter(tmp_path / "t.inter", rows), ratios=(0.8, 0.1, 0.1), split="temporal")
    assert d.item_ids[d.test[:, 1]].tolist() == ["0"]
    assert d.item_ids[d.valid[:, 1]].tolist() == ["1"]


@pytest.mark.parametrize(
    "content, line, reason",
    [
        ("user_id\titem_id:token\n1\t2\n", 1, "bad RecBole header field 'user_id'"),
        ("uid:token\titem_id:token\n1\t2\n", 1, "header has no user field 'user_id'"),
        (HEADER + "1\t2\t3\t4\n1\t3\t4\n", 3, "wrong column count: expected 4, found 3"),
        (HEADER + "1\t2\t3\t4\n\n1\t2\t5\t6\n", 4, "duplicate (user, item) pairs in this file"),
        (HEADER + "1\t2\t3\t4\n-1\t2\t3\t4\n", 3, "negative user id -1"),
        (HEADER + "1\t2\t3\t4\n2\t\t3\t4\n", 3, "empty item id"),
        (HEADER, None, "empty file"),
        ("", None, "empty file"),
    ],
)
def test_recbole_bad_input(tmp_path: Path, content: str, line: int | None, reason: str) -> None:
    path = _write(tmp_path / "bad.inter", content)
    with pytest.raises(DataFormatError) as exc:
        read_recbole(path)
    _assert_error(exc, path, line, reason)


def test_recbole_bad_rating_and_drop_duplicates(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.inter", HEADER + "1\t2\t4\t1\n1\t3\tfive\t2\n")
    with pytest.raises(DataFormatError) as exc:
        read_recbole(path, rating_threshold=4)
    _assert_error(exc, path, 3, "non-numeric rating 'five'")
    dup = _write(tmp_path / "d.inter", HEADER + "1\t2\t4\t1\n1\t3\t4\t1\n1\t2\t1\t9\n")
    d = read_recbole(dup, drop_duplicates=True, ratios=(1.0, 0.0))
    assert len(d.train) == 2


def test_recbole_checks_expected_sizes(tmp_path: Path) -> None:
    path = _inter(tmp_path / "s.inter", _rows(3, 4))
    with pytest.raises(DataFormatError, match="expected 5 distinct users, found 3"):
        read_recbole(path, n_users=5)


def test_recbole_real_ml100k(require_dataset) -> None:
    folder = require_dataset("ml-100k")
    d = read_recbole(folder / "ml-100k.inter", seed=0)
    assert (d.n_users, d.n_items) == (943, 1682)
    assert len(d.train) + len(d.valid) + len(d.test) == 100_000
    assert abs(len(d.train) - 80_000) < 500


# ----------------------------------------------------------------------------- CSV / TSV
def test_csv_header_auto_and_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", "userId,movieId,rating,timestamp\n1,10,4.0,5\n1,11,2.0,6\n2,10,5.0,7\n")
    d = read_csv(path, ratios=(1.0, 0.0))
    assert (d.n_users, d.n_items, len(d.train)) == (2, 2, 3)
    d = read_csv(path, columns=("userId", "movieId", "rating"), rating_threshold=3.5, ratios=(1.0, 0.0))
    assert len(d.train) == 2
    # no header: numbers in the first row, or text ids throughout
    assert len(read_csv(_write(tmp_path / "n.csv", "1,2\n3,4\n"), ratios=(1.0, 0.0)).train) == 2
    s = read_csv(_write(tmp_path / "s.csv", "alice,bob\ncarol,bob\n"), ratios=(1.0, 0.0))
    assert s.user_ids.tolist() == ["alice", "carol"]
    # a text first row over numeric rows is a header
    h = read_csv(_write(tmp_path / "h.csv", "a,b\n1,2\n"), ratios=(1.0, 0.0))
    assert h.user_ids.tolist() == ["1"]


def test_csv_separators_quoting_bom(tmp_path: Path) -> None:
    tsv = _write(tmp_path / "x.tsv", "u1\ti1\nu1\ti2\nu2\ti1\n")
    assert len(read_csv(tsv, sep="\t", header=None, ratios=(1.0, 0.0)).train) == 3
    ws = _write(tmp_path / "x.txt", "u1  i1\r\nu2 \t i2\r\n")
    assert len(read_csv(ws, sep=None, header=False, ratios=(1.0, 0.0)).train) == 2
    q = _write(tmp_path / "q.csv", '\ufeffuser,item\n"a,1",x\nb,x\n'.encode())
    d = read_csv(q, ratios=(1.0, 0.0))
    assert d.user_ids.tolist() == ["a,1", "b"]
    multi = _write(tmp_path / "ratings.dat", "1::10::5::9\n2::10::3::9\n")
    d = read_csv(multi, sep="::", rating_threshold=4, ratios=(1.0, 0.0))
    assert d.user_ids.tolist() == ["1"]


def test_csv_split_and_temporal(tmp_path: Path) -> None:
    rows = "".join(f"{u},{i},5,{i}\n" for u in range(30) for i in range(10))
    path = _write(tmp_path / "big.csv", rows)
    d = read_csv(path, seed=3)
    assert (len(d.train), len(d.valid), len(d.test)) == (240, 30, 30)
    t = read_csv(path, columns=(0, 1, 2, 3), split="temporal")
    assert set(t.item_ids[t.test[:, 1]].tolist()) == {"9"}
    with pytest.raises(ValueError, match="timestamp"):
        read_csv(path, split="temporal")
    users, items, lines, ts = read_pairs_table(path, columns=(0, 1, None, 3))
    assert users[0] == "0" and lines[-1] == 300 and ts is not None and ts[-1] == 9


@pytest.mark.parametrize(
    "content, line, reason, kw",
    [
        ("1,2\n3,4,5\n", 2, "wrong column count: expected 2, found 3", {}),
        ("1,2\n1,-4\n", 2, "negative item id -4", {}),
        ("1,2,5\n1,3,x\n", 2, "non-numeric rating 'x'", {"rating_threshold": 3}),
        ("1,2\n\n1,2\n", 3, "duplicate (user, item) pairs in this file: 1 repeated row(s)", {}),
        ("1,2\n", 1, "column 4 does not exist", {"columns": (0, 4)}),
        ("\n\n", None, "empty file", {}),
        (b"1,2\n\xff\xfe,1\n", 2, "not UTF-8 text", {}),
    ],
)
def test_csv_bad_input(tmp_path: Path, content, line, reason, kw) -> None:
    path = _write(tmp_path / "bad.csv", content)
    with pytest.raises(DataFormatError) as exc:
        read_csv(path, header=None, **kw)
    _assert_error(exc, path, line, reason)


def test_csv_threshold_needs_rating_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "1,2,5\n")
    with pytest.raises(ValueError, match="rating column"):
        read_csv(path, columns=(0, 1), rating_threshold=3)
