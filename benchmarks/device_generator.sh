#!/usr/bin/env bash
# One lent GPU machine, one call: two generators trained side by side on a subset of Lucchi slices,
# identical but for the VAE's adversarial loss (A: none, B: PatchGAN, adaptive weight 0.5). Which one
# (if any) replaces mito-gen is decided afterwards on the CPU, on Lucchi slices 115-139 that neither saw
# (benchmarks/probes/generator_choice.py); slices 140-164 are only used to report the chosen one.
# Here, before the call (data and diffusers, which the machine lacks, travel as ignored folders):
#   python benchmarks/device_data.py pack-subset --slices 0-114:2,115-139:4 --out .gendata
#   mkdir -p .gpusite && (cd .venv/lib/python3.11/site-packages && python -m zipfile -c ../../../../.gpusite/diffusers.zip diffusers)
# There (carry .gendata and .gpusite):
#   bash benchmarks/device_generator.sh --vae-minutes 3.5 --diffusion-minutes 4 --out "$OUT"
# Writes to --out: gen.tar.* (15 MB pieces of A/ and B/, each a generator folder + train json + log), gpu.txt.
set -uo pipefail
PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}; VM=3.5; DM=4; OUT=${OUT:-/tmp/out}; RUNS=/tmp/genruns; LIMIT=520
while [ $# -gt 0 ]; do
  case $1 in
    --vae-minutes) VM=$2; shift 2;; --diffusion-minutes) DM=$2; shift 2;; --out) OUT=$2; shift 2;;
    --limit) LIMIT=$2; shift 2;; *) echo "unknown option $1"; exit 2;;
  esac
done
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
"$PY" -c "import zipfile; zipfile.ZipFile('.gpusite/diffusers.zip').extractall('/tmp/site')" || exit 3
export PYTHONPATH="$PWD/src:/tmp/site"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"; } \
  > "$OUT/gpu.txt" 2>&1
"$PY" benchmarks/device_data.py unpack-subset .gendata --out /tmp/gen || exit 4
# pages 0-57: Lucchi 0-114, every 2nd slice (train); pages 58-64: Lucchi 115-139, every 4th (checkpoint choice)
COMMON=(--data /tmp/gen --train-slices 0-57 --val-slices 58-64 --device "$DEVICE" --vae-minutes "$VM"
        --diffusion-minutes "$DM" --vae-batch 32 --diffusion-batch 32 --latent-variants 4 --threads 4
        --val-every 500)
t0=$(date +%s)
timeout "$LIMIT" "$PY" benchmarks/train_generator.py "${COMMON[@]}" --out "$RUNS/A/gen" --name mito-gen \
  --results "$RUNS/A/train.json" > "$RUNS/A.log" 2>&1 &
a=$!
timeout "$LIMIT" "$PY" benchmarks/train_generator.py "${COMMON[@]}" --adv-weight 0.5 --out "$RUNS/B/gen" \
  --name mito-gen --results "$RUNS/B/train.json" > "$RUNS/B.log" 2>&1 &
b=$!
while kill -0 $a 2>/dev/null || kill -0 $b 2>/dev/null; do  # progress: each run's last stage and step
  sleep 30
  echo "t=$(( $(date +%s) - t0 ))s A: $(tail -n 1 "$RUNS/A.log" | cut -c1-150) | B: $(tail -n 1 "$RUNS/B.log" | cut -c1-150)"
done
wait $a; rc_a=$?; wait $b; rc_b=$?
echo "A exit $rc_a, B exit $rc_b, $(( $(date +%s) - t0 )) s"
tail -n 4 "$RUNS/A.log" "$RUNS/B.log"
cp "$RUNS/A.log" "$RUNS/A/log.txt" 2>/dev/null; cp "$RUNS/B.log" "$RUNS/B/log.txt" 2>/dev/null
(cd "$RUNS" && tar cf - A B | split -b 15M - "$OUT/gen.tar.")
ls -la "$OUT"
exit $(( rc_a || rc_b ))
