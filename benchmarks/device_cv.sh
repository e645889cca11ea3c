#!/usr/bin/env bash
# One lent GPU machine, one call: blocked 5-fold CV of a segmenter recipe (all folds at once) and, beside it,
# the same recipe trained on all 165 slices (the candidate to ship; it ships only if the CV says so).
# Run from the repo root there, after the data came (benchmarks/device_data.py):
#   bash benchmarks/device_cv.sh --data /tmp/lucchi --steps 16000 --name scratch16k_bf16 --out "$OUT"
# Writes to --out: cv_NAME.json, final.tar (the all-slices model folder), folds*.tar, logs.tar, gpu.txt.
set -uo pipefail
PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}; DATA=/tmp/lucchi; STEPS=16000; NAME=""; OUT=${OUT:-/tmp/out}; RUNS=/tmp/runs
while [ $# -gt 0 ]; do
  case $1 in
    --data) DATA=$2; shift 2;; --steps) STEPS=$2; shift 2;; --name) NAME=$2; shift 2;;
    --out) OUT=$2; shift 2;; *) echo "unknown option $1"; exit 2;;
  esac
done
[ -n "$NAME" ] || NAME="scratch$((STEPS / 1000))k_bf16"
RECIPE=(--steps "$STEPS" --lr 2e-3 --fg-prob 0.4 --hard 0.2 --ema 0.998 --dice batch --context 2 --precision bf16)
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS/final"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
nproc >> "$OUT/gpu.txt"; "$PY" -c "import torch; print('torch', torch.__version__)" >> "$OUT/gpu.txt"
N=$("$PY" -c "import tifffile, sys; print(len(tifffile.TiffFile(sys.argv[1]).pages))" "$DATA/training.tif")
t0=$(date +%s)
"$PY" benchmarks/cv.py --name "$NAME" --data "$DATA" --device "$DEVICE" --parallel 5 --threads 2 \
  --runs "$RUNS/cv" --out "$OUT/cv_$NAME.json" -- "${RECIPE[@]}" > "$RUNS/cv.log" 2>&1 &
cv=$!
"$PY" benchmarks/train_default.py --data "$DATA" --device "$DEVICE" --threads 2 --out "$RUNS/final/run" \
  --final "$RUNS/final/last" --train-slices "0-$((N - 1))" --val-slices none --tile 640 "${RECIPE[@]}" \
  > "$RUNS/final.out" 2>&1 &
fin=$!
while kill -0 $cv 2>/dev/null || kill -0 $fin 2>/dev/null; do  # progress: each run's last logged step
  sleep 30
  echo "t=$(( $(date +%s) - t0 ))s $(for f in "$RUNS"/cv/"$NAME"/fold*/run.log "$RUNS"/final/run.log; do
    [ -f "$f" ] && tail -n 1 "$f" | grep -o '"step": [0-9]*' | tr -d '"step: ' | tr '\n' ' '; done)"
done
wait $cv; rc_cv=$?; wait $fin; rc_fin=$?
echo "cv exit $rc_cv, final exit $rc_fin, $(( $(date +%s) - t0 )) s"
tail -n 8 "$RUNS/cv.log"
(cd "$RUNS/final" && tar cf "$OUT/final.tar" last run.log) 2>/dev/null
for pair in "0 1" "2 3" "4"; do
  dirs=(); for i in $pair; do [ -d "$RUNS/cv/$NAME/fold$i/last" ] && dirs+=("fold$i/last" "fold$i/run.log"); done
  [ ${#dirs[@]} -gt 0 ] && (cd "$RUNS/cv/$NAME" && tar cf "$OUT/folds${pair// /}.tar" "${dirs[@]}")
done
tar cf "$OUT/logs.tar" -C "$RUNS" cv.log final.out 2>/dev/null
exit $(( rc_cv || rc_fin ))
