"""``unlearnrec demo``: train a LightGCN on the built-in synthetic data and evaluate it."""

from __future__ import annotations

import time
from pathlib import Path

from unlearnrec import api
from unlearnrec.config import RunConfig
from unlearnrec.report import format_table, metrics_rows, write_json


def run_demo(out: str | Path, device: str = "cpu") -> dict:
    out = Path(out)
    t0 = time.perf_counter()
    cfg = RunConfig().with_overrides(
        ["data.dataset=synthetic", "model.name=lightgcn", "train.batch_size=2048", "train.learning_rate=0.01",
         "train.epochs=100", "train.patience=5", f"train.device={device}"]
    )
    res = api.train(cfg, out / "lightgcn")
    rows = metrics_rows(res["test"])
    table = format_table(rows, title=f"LightGCN on synthetic data: test metrics (best validation epoch {res['training']['best_epoch']})")
    result = {"command": "demo", "train": {k: v for k, v in res.items() if not k.endswith("_object")}, "seconds": time.perf_counter() - t0}
    write_json(out / "demo.json", result)
    result["table"] = table
    return result
