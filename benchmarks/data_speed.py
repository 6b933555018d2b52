"""Data-layer speed: reading the real LightGCN-format splits and carving a validation split (what the test
suite used to time; timings belong in a benchmark, not in unit tests).

    UNLEARNREC_DATA=../shared/data python benchmarks/data_speed.py
"""

from __future__ import annotations

import time

import numpy as np
from _common import record

from unlearnrec.data.interactions import Interactions
from unlearnrec.data.registry import list_datasets, load_dataset
from unlearnrec.data.splits import carve_validation
from unlearnrec.report import format_table


def main() -> None:
    rows = []
    present = {d["name"]: d for d in list_datasets()}
    for name in ("ml-1m", "gowalla", "yelp2018"):
        if not present.get(name, {}).get("present"):
            rows.append({"what": f"load {name}", "seconds": None, "note": "not under the data root"})
            continue
        t = time.perf_counter()
        d = load_dataset(name)
        rows.append({"what": f"load {name} (parse + validation carve)", "seconds": time.perf_counter() - t,
                     "note": f"{len(d.train) + len(d.valid)} train, {len(d.test)} test pairs"})
    rng = np.random.default_rng(0)
    n = 1_000_000
    pairs = np.stack([np.sort(rng.integers(0, 30_000, n)), rng.integers(0, 40_000, n)], 1)
    d = Interactions("big", 30_000, 40_000, pairs, None, None, np.arange(30_000).astype(str),
                     np.arange(40_000).astype(str))
    t = time.perf_counter()
    carve_validation(d, 0.1)
    rows.append({"what": "carve 10% validation from 1M pairs", "seconds": time.perf_counter() - t, "note": ""})
    table = format_table(rows, title="data layer speed")
    record("data_speed", {"rows": rows}, table)
    print(table)


if __name__ == "__main__":
    main()
