#!/usr/bin/env bash
# Reproduce a table of the paper with several seeds, then print mean ± std beside the paper's numbers.
#
#   scripts/reproduce.sh PRESET DATA [SEED ...]        (seeds default to 0 1 2)
#   scripts/reproduce.sh paper-cifar10 ../shared/data/cifar10
#   scripts/reproduce.sh paper-imagenet5 ../shared/data/imagenet5 0 1 2
#
# Each seed's run folder is runs/PRESET-seedS; a folder that exists is continued with --resume, so the
# script can be interrupted and started again (extra flags for every run go in $GSIMCLR_FLAGS, e.g.
# GSIMCLR_FLAGS="--stop-after 5" to cut pretraining into parts). The table goes to results/PRESET.md,
# the raw results.json of every run stay in their run folders.
set -euo pipefail
preset=${1:?usage: scripts/reproduce.sh PRESET DATA [SEED ...]}
data=${2:?usage: scripts/reproduce.sh PRESET DATA [SEED ...]}
shift 2
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
gsimclr=${GSIMCLR:-gsimclr}
runs=()
for seed in "${seeds[@]}"; do
  out="runs/${preset}-seed${seed}"
  resume=()
  [ -d "$out" ] && resume=(--resume)
  # shellcheck disable=SC2086
  "$gsimclr" run --preset "$preset" --data "$data" --seed "$seed" --out "$out" "${resume[@]}" ${GSIMCLR_FLAGS:-}
  runs+=("$out")
done
paper=()
case "$preset" in
  *cifar10*) paper=(--paper cifar10) ;;
  *imagenet5*) paper=(--paper imagenet5) ;;
esac
mkdir -p results
"$gsimclr" summarize "${runs[@]}" "${paper[@]}" --output "results/${preset}.md"
