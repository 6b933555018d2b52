#!/usr/bin/env bash
# Paper-scale UnlearnRec runs on a lent GPU (issue 12), then multi-GPU data-parallel training (issue 16): the unlearnrec bench grid of
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
# Issue 16: data-parallel epoch time on every lent GPU (one NCCL rank per GPU) against one GPU, side by side
# (Gowalla LightGCN, d = 128). Skipped on a single GPU: there is nothing to compare with.
NGPU=$(python3 -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [ "${NGPU:-0}" -ge 2 ]; then
  (cd benchmarks && python3 ddp_speed.py --config configs/gowalla.yaml --device cuda --nprocs "1,$NGPU" \
      --epochs 2 --repeats 2 model.embedding_size=128) 2>&1 | tee "$OUT/ddp_speed.log"
  cp benchmarks/results/ddp_speed_gowalla_lightgcn.* "$OUT/" 2>/dev/null || true
else
  echo "one GPU (${NGPU:-0}): the multi-GPU data-parallel stage is skipped" | tee "$OUT/ddp_speed.log"
fi
