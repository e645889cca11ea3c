#!/usr/bin/env bash
# The three rules of denoiser_dc_choice.py in one go, after runs/gen_dc has trained (see its docstring).
# Each realism run is cached: rerunning this script redoes nothing that is done.
#   bash benchmarks/probes/denoiser_dc_chain.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PY:-.venv/bin/python}
C=runs/choice_dc
mkdir -p "$C"
real() {  # NAME GENERATOR [--noise-tails]
  local name=$1 gen=$2
  shift 2
  until "$PY" benchmarks/realism.py --generator "$gen" --slices 115-139 --cache "$C/$name" \
      --out "$C/realism_$name.json" --minutes 30 "$@"; do
    [ $? -eq 3 ] || exit 1  # 3: out of time, cached; go on
  done
}
real shipped mito-gen
real dc runs/gen_dc
"$PY" benchmarks/probes/denoiser_dc_choice.py --realism "$C"
ship=$("$PY" -c "import json; print(json.load(open('benchmarks/results/denoiser_dc_choice.json'))['replaces_shipped'])")
if [ "$ship" = True ]; then K=dc; KG=runs/gen_dc; else K=shipped; KG=mito-gen; fi
real "${K}_tails" "$KG" --noise-tails
"$PY" benchmarks/probes/denoiser_dc_choice.py --realism "$C" --tails
tails=$("$PY" -c "import json; print(json.load(open('benchmarks/results/denoiser_dc_choice.json'))['noise_tails_default'])")
[ -d "$C/gen_psd" ] || "$PY" benchmarks/noise_psd_card.py "$KG" "$C/gen_psd"
if [ "$tails" = True ]; then real psd "$C/gen_psd" --noise-tails; else real psd "$C/gen_psd"; fi
"$PY" benchmarks/probes/denoiser_dc_choice.py --realism "$C" --tails --psd "$C/gen_psd"
