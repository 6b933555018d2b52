"""The package's public names, and a model trained from Python data that the CLI then serves."""

import json

from typer.testing import CliRunner

import unlearnrec


def test_public_names_import_from_the_package():
    from unlearnrec import Context, DeletionRequest, build_unlearner, list_unlearners

    names = {r["name"] for r in list_unlearners()}
    assert {"unlearnrec", "unlearnrec-calibrated", "retrain", "edgedrop"} <= names
    assert build_unlearner("edgedrop").name == "edgedrop"
    assert Context.__name__ == "Context" and DeletionRequest.__name__ == "DeletionRequest"
    for name in unlearnrec.__all__:
        assert getattr(unlearnrec, name) is not None
    try:
        unlearnrec.nope  # noqa: B018
    except AttributeError as exc:
        assert "nope" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("unknown attribute did not raise")


def test_a_checkpoint_trained_from_python_data_works_in_the_cli(tmp_path):
    """Data built in Python is stored in the checkpoint under its own name (not the config's default), so
    `evaluate` and `recommend` need nothing else."""
    from unlearnrec import RunConfig, train
    from unlearnrec.data.synthetic import make_synthetic

    data = make_synthetic(n_users=60, n_items=40, name="my-python-data")
    cfg = RunConfig().with_overrides({"train.epochs": 2, "model.embedding_size": 8})
    res = train(cfg, tmp_path / "ck", data=data, progress=False)
    assert res["config"]["data"]["dataset"] == "my-python-data"
    from unlearnrec.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "ck")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["recommend", "--checkpoint", str(tmp_path / "ck"), "--user", data.user_ids[3],
                            "-k", "4", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["dataset"] == "my-python-data" and len(rec["recommendations"][0]["items"]) == 4
