"""A user's own files through the CLI end to end, and every bad input refused in one line, changing nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unlearnrec.cli import app

runner = CliRunner()
TINY = ["train.epochs=4", "train.eval_every=1", "model.embedding_size=8", "train.batch_size=512"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def tree_hash(*paths: Path) -> str:
    """One digest over every file (name and bytes) under ``paths``."""
    h = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).is_dir() else [Path(root)]
        for f in files:
            h.update(str(f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def refused(result, *needles: str) -> None:
    """Exit status 2, one ``error:`` line on stderr that contains every needle, and no traceback."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def user_file(tmp_path_factory) -> Path:
    """A ratings file as users have them: tab-separated, CRLF, a header, 1-based integer raw ids, a rating
    column of which only 3 and above are interactions."""
    rng = np.random.default_rng(0)
    rows = ["userId\tmovieId\trating\ttimestamp"]
    for u in range(1, 81):
        for it in rng.choice(np.arange(1, 61), size=int(rng.integers(10, 25)), replace=False):
            rows.append(f"{u}\t{it}\t{int(rng.integers(1, 6))}\t{int(rng.integers(10**9, 2 * 10**9))}")
    path = tmp_path_factory.mktemp("own") / "ratings.tsv"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return path


@pytest.fixture(scope="module")
def own(tmp_path_factory, user_file):
    """train on the file (the only command that names data), then pre-train an encoder from the checkpoint."""
    root = tmp_path_factory.mktemp("own-run")
    ck, enc = root / "ck", root / "enc"
    r = invoke("train", "--data", user_file, "--columns", "userId,movieId,rating,timestamp",
               "--rating-threshold", "3", "--model", "lightgcn", "--out", ck, "--no-progress", *TINY)
    assert r.exit_code == 0, r.output
    r = invoke("pretrain-unlearner", "--checkpoint", ck, "--out", enc, "--no-progress",
               "pretrain_epochs=2", "batches_per_epoch=4")
    assert r.exit_code == 0, r.output
    return root, ck, enc, r.output


def test_own_file_trains_with_raw_ids_kept_and_the_data_stored(own, user_file):
    from unlearnrec.checkpoint import load_checkpoint

    _, ck, _, _ = own
    res = json.loads((ck / "result.json").read_text())
    assert res["config"]["data"]["dataset"] == "ratings" and res["config"]["data"]["source"]["rating_threshold"] == 3
    assert res["training"]["stop_reason"] in ("epoch limit", "early stop")
    data = load_checkpoint(ck).data()
    text = user_file.read_text().splitlines()[1:]
    kept = {(u, i) for u, i, rating, _ in (ln.split("\t") for ln in text) if int(rating) >= 3}
    seen = {(data.user_ids[u], data.item_ids[i]) for split in (data.train, data.valid, data.test) for u, i in split}
    assert seen == kept  # every interaction, by its raw ids, and nothing below the threshold
    assert data.user_ids[0] == "1" and data.user_ids[9] == "10"  # integer ids in numeric order


def test_own_file_end_to_end_without_a_dataset_flag(own, tmp_path):
    """evaluate -> recommend -> unlearn a request of raw ids -> recommend again, from the checkpoint alone: the
    forgotten items leave the user's seen-mask, so they may come back in the recommendations."""
    _, ck, enc, pre_output = own
    assert "pre-training" in pre_output
    r = invoke("evaluate", "--checkpoint", ck)
    assert r.exit_code == 0 and "recall" in r.output
    r = invoke("recommend", "--checkpoint", ck, "--user", "7", "-k", "60", "--json")
    assert r.exit_code == 0, r.output
    before = json.loads(r.output)["recommendations"][0]
    from unlearnrec.checkpoint import load_checkpoint

    data = load_checkpoint(ck).data()
    u = int(data.user_index(["7"])[0])
    history = sorted(data.item_ids[data.train[data.train[:, 0] == u, 1]].tolist())
    assert before["n_seen"] == len(history) and not set(before["items"]) & set(history)
    assert len(before["items"]) == data.n_items - len(history)
    forget = history[:3]
    req = tmp_path / "forget.csv"
    req.write_text("user,item\n" + "".join(f"7,{i}\n" for i in forget))
    out = tmp_path / "unlearned"
    r = invoke("unlearn", "--checkpoint", ck, "--encoder", enc, "--request", req, "--out", out,
               "--finetune-epochs", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("recommend", "--checkpoint", out, "--user", "7", "-k", "60", "--json")
    after = json.loads(r.output)["recommendations"][0]
    assert after["n_seen"] == len(history) - 3
    assert set(forget) <= set(after["items"])  # no longer masked as seen: the forgotten items may come back
    r = invoke("evaluate", "--checkpoint", out)  # the unlearned checkpoint carries the data too
    assert r.exit_code == 0, r.output
    r = invoke("recommend", "--checkpoint", out, "--user", "7", "--user", "8", "-k", "3")
    assert r.exit_code == 0 and r.output.count("| 7 ") == 3 and r.output.count("| 8 ") == 3
    # a second request continues from the unlearned checkpoint with the same encoder (its lineage binds it)
    r = invoke("unlearn", "--checkpoint", out, "--encoder", enc, "--users", "8", "--out", tmp_path / "round2",
               "--finetune-epochs", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "round2" / "meta.json").read_text())
    assert len(meta["lineage"]) == 2
    r = invoke("recommend", "--checkpoint", tmp_path / "round2", "--user", "8", "-k", "60", "--json")
    assert json.loads(r.output)["recommendations"][0]["n_seen"] == 0  # the whole user is gone from the graph


def test_a_dataset_with_its_own_train_and_test_files_is_not_resplit(tmp_path):
    """A LightGCN-format folder (train.txt + test.txt, ids from 1): the test split read is exactly the file's."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "mydata"
    folder.mkdir()
    train, test = [], []
    for u in range(1, 41):
        items = rng.choice(np.arange(1, 31), size=12, replace=False)
        train.append(f"{u} " + " ".join(map(str, items[:9])))
        test.append(f"{u} " + " ".join(map(str, items[9:])))
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    ck = tmp_path / "ck"
    r = invoke("train", "--data", folder, "--id-base", "1", "--model", "mf", "--out", ck, "--no-progress", *TINY)
    assert r.exit_code == 0, r.output
    from unlearnrec.checkpoint import load_checkpoint

    data = load_checkpoint(ck).data()
    got = {(data.user_ids[u], data.item_ids[i]) for u, i in data.test}
    want = {(ln.split()[0], i) for ln in test for i in ln.split()[1:]}
    assert got == want and len(data.test) == 3 * 40
    assert data.user_ids[0] == "1" and data.n_users == 40 and data.n_items <= 30
    assert len(data.valid) > 0  # validation carved from train, never from the test file
    r = invoke("recommend", "--checkpoint", ck, "--user", "40", "-k", "2")
    assert r.exit_code == 0, r.output


def test_data_problems_name_the_file_and_line(tmp_path, user_file):
    bad = tmp_path / "bad.tsv"
    bad.write_text("user\titem\n1\t2\n3\n")
    r = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "o")])
    refused(r, f"{bad}:3", "column count")
    assert not (tmp_path / "o").exists()
    r = runner.invoke(app, ["train", "--dataset", str(user_file), "--out", str(tmp_path / "o")])
    refused(r, "--data")
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    refused(r, "nope.csv")
    odd = tmp_path / "ids.csv"
    odd.write_text("user,item\n" + "".join(f"{u},{(u + k) % 20}\n" for u in range(1, 120) for k in range(6))
                   + "x1,3\n")
    r = runner.invoke(app, ["train", "--data", str(odd), "--out", str(tmp_path / "o2"), *TINY])
    assert r.exit_code == 0, r.output
    assert f"warning: {odd}:716: user id 'x1' is not an integer" in r.stderr


@pytest.fixture
def trained_copy(own, tmp_path):
    import shutil

    _, ck, enc, _ = own
    shutil.copytree(ck, tmp_path / "ck")
    shutil.copytree(enc, tmp_path / "enc")
    return tmp_path / "ck", tmp_path / "enc"


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
@pytest.mark.parametrize("target", ["model", "encoder", "train_state"])
def test_corrupted_files_are_one_line_errors_that_change_nothing(trained_copy, tmp_path, damage, target):
    ck, enc = trained_copy
    path = {"model": ck / "model.safetensors", "encoder": enc / "encoder.safetensors",
            "train_state": ck / "train_state.safetensors"}[target]
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 3], "random": np.random.default_rng(0).bytes(4096),
                      "empty": b""}[damage])
    digest = tree_hash(ck, enc)
    out = tmp_path / "out"
    if target == "train_state":
        calls = [["train", "--out", str(ck), "--resume"]]  # the run's config and data come from the checkpoint
    elif target == "model":
        calls = [["evaluate", "--checkpoint", str(ck)], ["recommend", "--checkpoint", str(ck), "--user", "1"],
                 ["unlearn", "--checkpoint", str(ck), "--encoder", str(enc), "--users", "1", "--out", str(out)],
                 ["pretrain-unlearner", "--checkpoint", str(ck), "--out", str(out)]]
    else:
        calls = [["unlearn", "--checkpoint", str(ck), "--encoder", str(enc), "--users", "1", "--out", str(out)]]
    for args in calls:
        r = runner.invoke(app, args)
        refused(r, path.name)
    assert tree_hash(ck, enc) == digest and not out.exists()


def test_bad_options_and_configs_are_one_line_errors(own, tmp_path):
    _, ck, enc, _ = own
    digest = tree_hash(ck, enc)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  epochs: 3\n   lr: [\n")
    r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
    refused(r, str(cfg), "not valid YAML")
    cfg.write_text("train: {epochs: -1}\n")
    r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
    refused(r, str(cfg), "train.epochs")
    out = tmp_path / "u"
    for args, needle in [
        (["unlearn", "--checkpoint", str(ck), "--encoder", str(enc), "--users", "", "--out", str(out)],
         "--users is empty"),
        (["unlearn", "--checkpoint", str(ck), "--encoder", str(enc), "--method", "gif", "--users", "1",
          "--out", str(out)], "--encoder applies to the unlearnrec methods only"),
        (["unlearn", "--checkpoint", str(ck), "--encoder", str(enc), "--users", "nobody", "--out", str(out)],
         "nobody"),
        (["recommend", "--checkpoint", str(ck), "--user", "nobody"], "unknown user id"),
        (["recommend", "--checkpoint", str(ck)], "--user"),
        (["evaluate", "--checkpoint", str(tmp_path / "nothing")], "no such checkpoint directory"),
        (["pretrain-unlearner", "--checkpoint", str(ck), "--out", str(enc)], "--force"),
    ]:
        refused(runner.invoke(app, args), needle)
    assert tree_hash(ck, enc) == digest and not out.exists()
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(ck), "--encoder", str(enc), "--users", "3,3",
                            "--finetune-epochs", "0", "--out", str(out)])
    assert r.exit_code == 0 and "--users repeats 3" in r.stderr


def test_out_holding_another_run_is_refused_unless_forced(own, tmp_path, user_file):
    _, ck, _, _ = own
    import shutil

    target = tmp_path / "ck"
    shutil.copytree(ck, target)
    digest = tree_hash(target)
    args = ["train", "--dataset", "synthetic", "--model", "mf", "--out", str(target), "--no-progress", *TINY]
    refused(runner.invoke(app, args), str(target), "already holds a checkpoint", "lightgcn model on ratings",
            "--force")
    assert tree_hash(target) == digest
    r = invoke(*args, "--force")
    assert r.exit_code == 0, r.output
    meta = json.loads((target / "meta.json").read_text())
    assert meta["model"] == "mf" and meta["data"]["name"] == "synthetic"
    assert not (target / "data.safetensors").exists()  # a registered dataset is not copied into checkpoints
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_interrupted_forced_training_leaves_the_old_checkpoint(own, tmp_path, monkeypatch):
    """--force writes the periodic checkpoints beside the target: a run killed half-way leaves the old one."""
    import shutil

    from unlearnrec import api
    from unlearnrec.config import RunConfig

    _, ck, _, _ = own
    target = tmp_path / "ck"
    shutil.copytree(ck, target)
    digest = tree_hash(target)

    def stop(epoch, record, trainer):
        if epoch == 2:
            raise KeyboardInterrupt

    cfg = RunConfig().with_overrides({"model.name": "mf", **dict(x.split("=") for x in TINY)})
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, target, force=True, callbacks=[stop], progress=False)
    assert tree_hash(target) == digest


def test_request_file_problems_name_the_line(own, tmp_path):
    _, ck, enc, _ = own
    from unlearnrec.checkpoint import load_checkpoint

    data = load_checkpoint(ck).data()
    u = data.user_ids[int(data.train[0, 0])]
    i = data.item_ids[int(data.train[0, 1])]
    mine = set(data.train[data.train[:, 0] == data.train[0, 0], 1].tolist())
    other = data.item_ids[next(j for j in range(data.n_items) if j not in mine)]  # not a training edge of u
    digest = tree_hash(ck, enc)
    out = tmp_path / "u"
    req = tmp_path / "r.csv"
    cases = [
        ("user,item,reason\n" + f"{u},{i}\n", f"{req}:2: expected 3 columns like line 1, found 2"),
        (f"user,item\n{u},{i}\nnobody,{i}\n", "nobody on line 3"),
        (f"user,item\n{u},{i}\n{u},no-such-item\n", "no-such-item on line 3"),
        ("user,item\n", "a header and no user,item pair"),
        (f"user,item\n{u},{i}\n{u},{other}\n", f"({u}, {other}) on line 3"),
    ]
    for text, needle in cases:
        req.write_text(text)
        r = runner.invoke(app, ["unlearn", "--checkpoint", str(ck), "--encoder", str(enc), "--request", str(req),
                                "--out", str(out)])
        refused(r, needle)
    assert tree_hash(ck, enc) == digest and not out.exists()
    req.write_text(f"user,item\n{u},{i}\n{u},{i}\n")
    r = runner.invoke(app, ["unlearn", "--checkpoint", str(ck), "--encoder", str(enc), "--request", str(req),
                            "--finetune-epochs", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"warning: {req}:3: repeats line 2" in r.stderr
    assert json.loads((out / "result.json").read_text())["request"]["n_edges"] == 1


@pytest.mark.parametrize("method, settings", [("sisa", "n_shards: 3\nepochs: 2\n"),
                                              ("receraser", "n_shards: 3\nepochs: 2\nagg_epochs: 2\n")])
def test_partition_ensembles_are_saved_and_served(own, tmp_path, method, settings):
    """SISA's and RecEraser's unlearned ensembles are checkpoints that evaluate and recommend serve (the
    forgotten user's items no longer count as seen), and the same method continues from them."""
    from unlearnrec.checkpoint import load_checkpoint

    _, ck, _, _ = own
    cfg = tmp_path / "m.yaml"
    cfg.write_text(settings)
    out = tmp_path / "ens"
    r = invoke("unlearn", "--checkpoint", ck, "--method", method, "--method-config", cfg, "--users", "9",
               "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    res = json.loads((out / "result.json").read_text())
    ens = load_checkpoint(out)
    assert ens.model.n_shards == 3 and (ens.model.aggregator is not None) == (method == "receraser")
    assert len(ens.edges) == res["unlearn"]["residual_edges"]
    r = invoke("evaluate", "--checkpoint", out)
    assert r.exit_code == 0, r.output
    got = json.loads((out / "evaluation-test.json").read_text())["metrics"]["recall@20"]
    assert abs(got - res["utility_after"]["recall@20"]) < 1e-6  # the saved ensemble serves what was measured
    r = invoke("recommend", "--checkpoint", out, "--user", "9", "-k", "5", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["recommendations"][0]["n_seen"] == 0
    refused(runner.invoke(app, ["unlearn", "--checkpoint", str(out), "--method", "edgedrop", "--users", "3",
                                "--out", str(tmp_path / "again")]), f"3-shard {method} ensemble can only be")
    # the next request continues from the saved shards and retrains only those it touches
    r = invoke("unlearn", "--checkpoint", out, "--method", method, "--method-config", cfg, "--users", "3",
               "--out", tmp_path / "again", "--no-progress")
    assert r.exit_code == 0, r.output
    res2 = json.loads((tmp_path / "again" / "result.json").read_text())
    touched = res2["unlearn"]["log"]["shards_touched"]["count"]
    assert 1 <= touched <= 3 and res2["unlearn"]["residual_edges"] == len(ens.edges) - res2["request"]["n_edges"]
    assert load_checkpoint(tmp_path / "again").model.n_shards == 3
    cfg.write_text("n_shards: 3\nshards: 2\n")
    refused(runner.invoke(app, ["unlearn", "--checkpoint", str(ck), "--method", method, "--method-config", str(cfg),
                                "--users", "9", "--out", str(tmp_path / "bad")]), f"{cfg}: shards: Extra inputs")


def test_training_says_why_it_stopped_and_beats_without_a_terminal(tmp_path):
    r = invoke("train", "--dataset", "synthetic", "--model", "mf", "--out", tmp_path / "a", "--no-progress",
               *TINY)
    assert r.exit_code == 0, r.output
    assert "stopped: epoch limit 4" in r.stdout
    assert "epoch 2/4  loss" in r.stderr and "valid recall@20" in r.stderr  # one line per evaluation
    r = invoke("train", "--dataset", "synthetic", "--model", "mf", "--out", tmp_path / "b", "--no-progress",
               "train.epochs=50", "train.max_seconds=0.01", "model.embedding_size=8")
    assert r.exit_code == 0, r.output
    assert "stopped: time budget of 0.01 s reached" in r.stdout
    assert json.loads((tmp_path / "b" / "result.json").read_text())["training"]["stop_reason"] == "time budget"
