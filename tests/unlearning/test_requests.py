"""Deletion requests: constructors, validation (refused requests change nothing), merge, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unlearnrec.data.interactions import Interactions, pair_keys
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.graph import Graph
from unlearnrec.unlearning import DeletionRequest, RequestError


@pytest.fixture(scope="module")
def data() -> Interactions:
    return make_synthetic(n_users=40, n_items=30, n_communities=3, mean_degree=6, seed=3)


@pytest.fixture(scope="module")
def graph(data: Interactions) -> Graph:
    return Graph(data.train, data.n_users, data.n_items)


@pytest.fixture
def raw_data() -> Interactions:
    """3 users x 4 items with non-numeric raw ids; train (u0,i0) (u0,i2) (u1,i1) (u2,i3) (u2,i0)."""
    return Interactions(
        name="raw",
        n_users=3,
        n_items=4,
        train=np.array([[0, 0], [0, 2], [1, 1], [2, 3], [2, 0]]),
        valid=np.zeros((0, 2)),
        test=np.array([[1, 3]]),
        user_ids=np.array(["alice", "bob", "carol"]),
        item_ids=np.array(["i-a", "i-b", "i-c", "i-d"]),
    )


def _unchanged(graph: Graph, keys_before: np.ndarray, n_before: int) -> None:
    assert graph.n_edges == n_before
    assert np.array_equal(graph.keys, keys_before)


# ------------------------------------------------------------------------- from_pairs
def test_from_pairs_normalises(graph: Graph, data: Interactions) -> None:
    e = graph.edges
    pick = e[[7, 3, 3, 0, 12]]  # unsorted, with a duplicate
    req = DeletionRequest.from_pairs(graph, pick)
    assert req.edges.dtype == np.int64 and req.edges.shape == (4, 2)
    assert np.array_equal(req.edges, np.unique(pick, axis=0))
    assert req.kind == "pairs" and (req.n_users, req.n_items) == (graph.n_users, graph.n_items)
    assert not req.edges.flags.writeable
    # the same from the Interactions and from a bare train-pair array
    assert np.array_equal(DeletionRequest.from_pairs(data, pick).edges, req.edges)
    bare = DeletionRequest.from_pairs(data.train, pick)
    assert np.array_equal(bare.edges, req.edges) and bare.n_items is None
    assert len(req) == req.n_edges == 4
    assert np.array_equal(req.users_touched, np.unique(pick[:, 0]))


def test_non_edges_refused_and_listed(graph: Graph, data: Interactions) -> None:
    keys, n = graph.keys.copy(), graph.n_edges
    known = np.concatenate([data.train, data.valid, data.test])
    test_pair = data.test[0]  # a real interaction, but not a training edge
    good = graph.edges[:3]
    with pytest.raises(RequestError) as ei:
        DeletionRequest.from_pairs(graph, np.vstack([good, test_pair]))
    msg = str(ei.value)
    assert "1 pair(s) are not training edges" in msg and f"({test_pair[0]}, {test_pair[1]})" in msg
    assert ei.value.offenders == [test_pair.tolist()]
    assert isinstance(ei.value, ValueError)
    _unchanged(graph, keys, n)
    # many offenders: the first 20 shown, plus how many more
    free = np.array([(u, i) for u in range(graph.n_users) for i in range(graph.n_items)])
    free = free[~np.isin(pair_keys(free, graph.n_items), pair_keys(known, graph.n_items))][:25]
    with pytest.raises(RequestError, match=r"25 pair\(s\) are not training edges: .*\.\.\. \(5 more\)") as ei:
        DeletionRequest.from_pairs(graph, free)
    assert len(ei.value.offenders) == 25
    with pytest.raises(RequestError, match="not training edges"):
        DeletionRequest.from_pairs(data.train, free)
    _unchanged(graph, keys, n)


def test_out_of_range_and_empty_refused(graph: Graph) -> None:
    keys, n = graph.keys.copy(), graph.n_edges
    with pytest.raises(RequestError, match="outside the graph"):
        DeletionRequest.from_pairs(graph, [[graph.n_users, 0], [0, 0]])
    with pytest.raises(RequestError, match="negative"):
        DeletionRequest.from_pairs(graph.edges, [[-1, 0]])
    for empty in ([], np.zeros((0, 2), np.int64), None):
        with pytest.raises(RequestError, match="empty"):
            DeletionRequest.from_pairs(graph, empty)
    with pytest.raises(RequestError, match="empty"):
        DeletionRequest(np.zeros((0, 2)))
    with pytest.raises(RequestError):
        DeletionRequest.from_pairs(graph, [1, 2, 3])
    _unchanged(graph, keys, n)


# ------------------------------------------------------------------------- raw ids / file
def test_from_raw_pairs(raw_data: Interactions) -> None:
    req = DeletionRequest.from_raw_pairs(raw_data, None, ["carol", "alice"], ["i-d", "i-c"])
    assert req.edges.tolist() == [[0, 2], [2, 3]] and req.kind == "raw-pairs"
    g = Graph(raw_data.train, 3, 4)
    with pytest.raises(RequestError) as ei:
        DeletionRequest.from_raw_pairs(raw_data, g, ["alice", "dave", "erin", "dave"], ["i-a", "i-a", "i-z", "i-a"])
    msg = str(ei.value)
    assert "2 unknown user id(s): dave, erin" in msg and "1 unknown item id(s): i-z" in msg
    assert ("user", "dave") in ei.value.offenders and ("item", "i-z") in ei.value.offenders
    # known ids, but (bob, i-d) is a TEST pair, not a training edge: listed by raw id
    not_edge = r"1 \(user, item\) pair\(s\) are not training edges \(raw ids\): \(bob, i-d\)"
    with pytest.raises(RequestError, match=not_edge):
        DeletionRequest.from_raw_pairs(raw_data, g, ["alice", "bob"], ["i-a", "i-d"])
    with pytest.raises(RequestError, match="aligned"):
        DeletionRequest.from_raw_pairs(raw_data, g, ["alice"], ["i-a", "i-c"])
    with pytest.raises(RequestError, match="empty"):
        DeletionRequest.from_raw_pairs(raw_data, g, [], [])
    assert g.n_edges == 5
    users = DeletionRequest.from_raw_users(raw_data, g, ["carol"])
    assert users.edges.tolist() == [[2, 0], [2, 3]]
    with pytest.raises(RequestError, match="unknown user id.*zed"):
        DeletionRequest.from_raw_users(raw_data, g, ["zed"])


@pytest.mark.parametrize(
    "text",
    [
        "user,item\ncarol,i-d\nalice,i-c\n",
        "carol,i-d\nalice,i-c\n",
        "user_id:token\titem_id:token\ncarol\ti-d\nalice\ti-c\n",
        "# a comment\ncarol i-d 5.0 12345\n\nalice  i-c 4.0 1\n",
        'userId, itemId\n"carol", "i-d"\nalice,i-c\n',
    ],
)
def test_from_file_formats(raw_data: Interactions, tmp_path: Path, text: str) -> None:
    p = tmp_path / "req.csv"
    p.write_text(text)
    req = DeletionRequest.from_file(p, raw_data)
    assert req.edges.tolist() == [[0, 2], [2, 3]] and req.kind == "file" and "req.csv" in req.description


def test_from_file_errors(raw_data: Interactions, tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("user,item\ncarol,i-d\nmallory,i-c\n")
    with pytest.raises(RequestError, match=r"bad\.csv: raw: 1 unknown user id\(s\): mallory"):
        DeletionRequest.from_file(p, raw_data)
    p.write_text("user,item\n")
    with pytest.raises(RequestError, match="empty"):
        DeletionRequest.from_file(p, raw_data)
    p.write_text("")
    with pytest.raises(RequestError, match="empty"):
        DeletionRequest.from_file(p, raw_data)
    p.write_text("alice\nbob\n")
    with pytest.raises(RequestError, match="not a user,item CSV"):
        DeletionRequest.from_file(p, raw_data)
    with pytest.raises(RequestError, match="cannot read"):
        DeletionRequest.from_file(tmp_path / "missing.csv", raw_data)
    # an explicit header=False makes a header-looking first row an (unknown) pair
    p.write_text("user,item\ncarol,i-d\n")
    with pytest.raises(RequestError, match="unknown user id"):
        DeletionRequest.from_file(p, raw_data, header=False)


def test_from_file_gowalla_tiny(require_dataset, data_root: Path, tmp_path: Path) -> None:
    from unlearnrec.data.registry import load_dataset

    require_dataset("gowalla-tiny")
    d = load_dataset("gowalla-tiny", data_root)
    g = Graph(d.train, d.n_users, d.n_items)
    e = g.edges[::97]
    p = tmp_path / "req.csv"
    p.write_text("user,item\n" + "".join(f"{d.user_ids[u]},{d.item_ids[i]}\n" for u, i in e))
    req = DeletionRequest.from_file(p, d, g)
    assert np.array_equal(req.edges, e)
    assert req.residual(g).n_edges == g.n_edges - len(e)


# ------------------------------------------------------------------------- users / items / random
def test_users_and_items(graph: Graph) -> None:
    e = graph.edges
    req = DeletionRequest.users(graph, [5, 1, 5])
    assert np.array_equal(req.edges, e[np.isin(e[:, 0], [1, 5])]) and req.kind == "users"
    res = req.residual(graph)
    assert res.n_edges == graph.n_edges - len(req)
    assert not np.isin(res.edges[:, 0], [1, 5]).any()
    items = DeletionRequest.items(graph, np.array([0, 2]))
    assert np.array_equal(items.edges, e[np.isin(e[:, 1], [0, 2])]) and items.kind == "items"
    keys, n = graph.keys.copy(), graph.n_edges
    with pytest.raises(RequestError, match=r"2 user index\(es\) outside 0\.\.39: 40, 99"):
        DeletionRequest.users(graph, [3, 40, 99])
    with pytest.raises(RequestError, match="item index"):
        DeletionRequest.items(graph, [-1])
    with pytest.raises(RequestError, match="integers"):
        DeletionRequest.users(graph, ["3"])
    lonely = Graph(np.array([[0, 0]]), 3, 2)
    with pytest.raises(RequestError, match="empty.*no training edge"):
        DeletionRequest.users(lonely, [1, 2])
    _unchanged(graph, keys, n)


def test_random_edges(graph: Graph) -> None:
    req = DeletionRequest.random_edges(graph, 0.1, seed=4)
    assert len(req) == round(0.1 * graph.n_edges) and graph.contains(req.edges).all()
    assert req.kind == "random-edges" and "10%" in req.description and "seed 4" in req.description
    assert req == DeletionRequest.random_edges(graph, 0.1, seed=4)
    assert not np.array_equal(req.edges, DeletionRequest.random_edges(graph, 0.1, seed=5).edges)
    assert len(DeletionRequest.random_edges(graph, count=7, seed=0)) == 7
    assert len(DeletionRequest.random_edges(graph, 1e-9)) == 1  # at least one edge
    bads = [{"fraction": 0.0}, {"fraction": 1.5}, {"count": 0}, {"count": graph.n_edges + 1}, {}]
    for bad in bads + [{"fraction": 0.1, "count": 3}]:
        with pytest.raises(RequestError):
            DeletionRequest.random_edges(graph, **bad)


def test_random_users(graph: Graph) -> None:
    req = DeletionRequest.random_users(graph, 4, seed=1)
    users = req.users_touched
    assert len(users) == 4 and req.kind == "random-users"
    e = graph.edges
    assert np.array_equal(req.edges, e[np.isin(e[:, 0], users)])
    with pytest.raises(RequestError):
        DeletionRequest.random_users(graph, graph.n_users + 1)


# ------------------------------------------------------------------------- merge / sequential
def test_merge_and_sequential(graph: Graph) -> None:
    a = DeletionRequest.random_edges(graph, count=10, seed=0)
    b = DeletionRequest.random_edges(graph, count=10, seed=1)
    m = a.merge(b)
    assert np.array_equal(m.edges, np.unique(np.vstack([a.edges, b.edges]), axis=0))
    assert m.kind == "random-edges" and "+" in m.description
    assert a.merge(DeletionRequest.users(graph, [0])).kind == "merged"
    # sequential: the second request is validated against the residual graph of the first
    res = a.residual(graph)
    with pytest.raises(RequestError, match="not training edges"):
        DeletionRequest.from_pairs(res, a.edges[:2])
    with pytest.raises(RequestError, match="not training edges"):
        a.residual(res)
    b2 = DeletionRequest.random_edges(res, count=5, seed=2)
    assert b2.validate(res) is b2
    assert a.merge(b2).residual(graph).n_edges == graph.n_edges - 15
    other = DeletionRequest(a.edges, n_users=graph.n_users, n_items=graph.n_items + 1)
    with pytest.raises(RequestError, match="different graphs"):
        a.merge(other)


# ------------------------------------------------------------------------- persistence
def test_save_load_roundtrip(graph: Graph, tmp_path: Path) -> None:
    req = DeletionRequest.random_edges(graph, 0.05, seed=3)
    j = req.to_json()
    assert json.loads(json.dumps(j)) == j and j["n_edges"] == len(req)
    assert DeletionRequest.load(req.save(tmp_path / "r.json")) == req
    assert DeletionRequest.from_json(json.dumps(j), graph) == req
    npy = req.save(tmp_path / "r.npy")
    arr = np.load(npy, allow_pickle=False)
    assert arr.dtype == np.int64 and np.array_equal(arr, req.edges)
    back = DeletionRequest.load(npy, graph)
    assert np.array_equal(back.edges, req.edges) and back.n_items == graph.n_items
    # loading against a graph where the edges no longer exist is refused
    with pytest.raises(RequestError, match="not training edges"):
        DeletionRequest.load(npy, req.residual(graph))
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(RequestError, match="not a serialised"):
        DeletionRequest.load(tmp_path / "x.json")
    with pytest.raises(RequestError, match="cannot read"):
        DeletionRequest.load(tmp_path / "nope.json")
