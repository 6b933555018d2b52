#!/usr/bin/env bash
# Paper-scale UnlearnRec runs on a lent GPU (issue 12): the unlearnrec bench grid of
# configs/unlearnrec_paper_scale_gpu.yaml (Gowalla and Yelp2018, LightGCN d = 128, both UnlearnRec variants
# vs EdgeDrop and two retrains, adversarial and random 1 % requests). Cells are written as they finish, so a
# run cut short by its time limit still returns what it did (re-running resumes).
# Usage on the device machine, from the repo root:  OUT=$OUT bash benchmarks/gpu_paper_scale.sh
# Preparation here (the device machine has no ../shared and no pydantic): copy the two datasets into an
# ignored .devdata/ folder (cp -r ../shared/data/{gowalla,yelp2018} .devdata/; rm -rf .devdata/*/source)
# and pydantic's wheels for the device's Python into .whl/ (pydantic, pydantic_core, annotated_types,
# typing_inspection; see the device tool's README), then run with carry [".whl", ".devdata"].
set -u
OUT=${OUT:-/tmp/out}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export UNLEARNREC_DATA=${UNLEARNREC_DATA:-$PWD/.devdata} PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 - "$OUT" <<'PY' 2>&1 | tee "$OUT/bench.log"
import sys
from unlearnrec.bench import BenchConfig, run_bench
out = sys.argv[1]
cfg = BenchConfig.load("benchmarks/configs/unlearnrec_paper_scale_gpu.yaml")
res = run_bench(cfg, out=f"{out}/bench", cache_dir="/tmp/bench-cache", device="cuda", progress=False, plots=False)
print(res.table)
PY
