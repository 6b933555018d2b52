"""Provenance: the git state of the code, taken when a run starts, and None values outside a checkout."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unlearnrec import api, provenance
from unlearnrec.config import RunConfig
from unlearnrec.data.synthetic import make_synthetic
from unlearnrec.provenance import git_state

REPO = Path(__file__).resolve().parents[1]


def _in_checkout(path: Path) -> bool:
    if shutil.which("git") is None:
        return False
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True).returncode == 0


def test_git_state_of_this_checkout():
    if not _in_checkout(REPO):
        pytest.skip("not a git checkout")
    state = git_state(REPO / "src")
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and isinstance(state["dirty"], bool)
    assert state["describe"] and state["changed_files"] >= 0
    if not state["dirty"]:
        assert state["diff_sha256"] is None and state["changed_files"] == 0
    assert git_state(REPO / "README.md")["commit"] == state["commit"]  # a file: its folder's checkout


def test_untracked_results_do_not_make_the_code_dirty(tmp_path):
    """A grid's cells appear as untracked files under benchmarks/results/ while it runs: a run started beside it
    records clean code; any other untracked file (a new config), or a tracked change, is dirty."""
    if shutil.which("git") is None:
        pytest.skip("no git binary")

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_state(tmp_path / "src")["dirty"] is False
    cell = tmp_path / "benchmarks" / "results" / "grids" / "g" / "cells" / "a.json"
    cell.parent.mkdir(parents=True)
    cell.write_text("{}")
    state = git_state(tmp_path / "src")  # asked from a sub-folder: paths are the root's
    assert (state["dirty"], state["changed_files"], state["untracked_results"]) == (False, 0, 1)
    (tmp_path / "benchmarks" / "new.yaml").write_text("a: 1\n")
    assert git_state(tmp_path / "src")["dirty"] is True
    (tmp_path / "benchmarks" / "new.yaml").unlink()
    (tmp_path / "src" / "code.py").write_text("x = 2\n")
    state = git_state(tmp_path)
    assert (state["dirty"], state["changed_files"], state["untracked_results"]) == (True, 1, 1)
    assert state["diff_sha256"] is not None


def test_git_state_outside_a_checkout_is_none(tmp_path):
    if _in_checkout(tmp_path):
        pytest.skip("the temporary folder is inside a git checkout")
    none = {"commit": None, "dirty": None, "describe": None, "changed_files": None, "untracked_results": None,
            "diff_sha256": None}
    assert git_state(tmp_path) == none
    assert git_state(tmp_path / "does-not-exist") == none


def test_train_records_the_state_when_it_starts(tmp_path, monkeypatch):
    fake = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(api, "git_state", lambda path=None: dict(fake))
    cfg = RunConfig().with_overrides({"model.embedding_size": 4, "model.n_layers": 1, "train.epochs": 2,
                                      "train.batch_size": 4096, "train.ks": [20]})

    def commit_meanwhile(epoch, record, trainer):  # the checkout moves on while training runs
        fake["commit"] = "b" * 40

    res = api.train(cfg, tmp_path / "run", data=make_synthetic(), callbacks=[commit_meanwhile], progress=False)
    assert fake["commit"] == "b" * 40 and res["provenance"] == {"commit": "a" * 40, "dirty": False}
    assert json.loads((tmp_path / "run" / "result.json").read_text())["provenance"]["commit"] == "a" * 40


def test_benchmark_records_carry_the_start_state(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("_common", None)
    import _common

    assert set(_common.START) == {"date", "git"} and set(_common.START["git"]) >= {"commit", "dirty"}
    monkeypatch.setattr(_common, "START", {"date": "2000-01-01T00:00:00Z",
                                           "git": {"commit": "c" * 40, "dirty": True}})
    monkeypatch.setattr(provenance, "git_state", lambda path=None: {"commit": "d" * 40, "dirty": False})
    path = _common.record("prov", {"x": 1}, "| a |", out_dir=tmp_path)
    payload = json.loads(path.read_text())
    assert (payload["git_commit"], payload["git_dirty"], payload["started"]) == ("c" * 40, True, "2000-01-01T00:00:00Z")
    assert "commit: " + "c" * 40 + " (uncommitted changes)" in (tmp_path / "prov.md").read_text()
