#!/usr/bin/env bash
# Paper-scale LightGCN runs on a lent GPU (issue 2): Gowalla and Yelp2018, two recipes each, run
# concurrently on one GPU; the recipe is chosen by validation recall@20 (never test). Each run also refits
# on train+valid for its validation-selected epoch count.
# Usage on the device machine, from the repo root:  bash benchmarks/gpu_paper_scale.sh SECONDS
# Preparation here (the device machine has no ../shared and no pydantic): copy the two datasets into an
# ignored .devdata/ folder (cp -r ../shared/data/{gowalla,yelp2018} .devdata/; rm -rf .devdata/*/source)
# and pydantic's wheels for Python 3.12 into .whl/ (pydantic, pydantic_core, annotated_types,
# typing_inspection; see the device tool's README), then run with carry [".whl", ".devdata"].
set -u
BUDGET=${1:-220}
OUT=${OUT:-/tmp/out}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export UNLEARNREC_DATA=${UNLEARNREC_DATA:-$PWD/.devdata} PYTHONUNBUFFERED=1
nvidia-smi -L || true
cd benchmarks
for ds in gowalla yelp2018; do
  python3 train_backbones.py --config configs/$ds.yaml --models lightgcn --refit --out "$OUT" \
    --name ${ds}_lr2e-3_b4096 --max-seconds "$BUDGET" train.device=cuda > "$OUT/${ds}_a.log" 2>&1 &
  python3 train_backbones.py --config configs/$ds.yaml --models lightgcn --refit --out "$OUT" \
    --name ${ds}_lr5e-3_b8192 --max-seconds "$BUDGET" train.device=cuda train.learning_rate=0.005 \
    train.batch_size=8192 > "$OUT/${ds}_b.log" 2>&1 &
done
wait
tail -n 4 "$OUT"/*.log
