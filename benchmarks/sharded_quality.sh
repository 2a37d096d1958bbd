#!/bin/sh
# The README's TorchRec quality table: MovieLens test Recall@20 of one method trained three ways
# at the same seed and epochs, each in its own working directory under OUT:
#   two:   configs/ranker/movielens_sharded.yaml on 2 gloo processes (tables sharded)
#   one:   the same config in 1 process (TorchRec tables, fused row-wise Adagrad)
#   torch: configs/ranker/movielens.yaml (torch tables, Adam)
# then `ranker test` and `ranker validate` of each last checkpoint in 1 process. Every process
# runs one OpenMP thread: with 2, timing-dependent reductions once made two identical 1-process
# runs of `ours` differ (cold 0.2607 vs 0.2708; the mixture's discrete weight choice on val
# amplifies tiny differences); with 1 the figures repeat exactly.
#
#   coldstart embed --encoder minilm --input movielens --out runs/ranker/movielens/minilm
#   sh benchmarks/sharded_quality.sh warmstart runs/sharded_quality
#   sh benchmarks/sharded_quality.sh ours runs/sharded_quality
# Usage: sh benchmarks/sharded_quality.sh METHOD [OUT] [EMBEDDINGS]  (from the repository root)
set -eu
METHOD=${1:?method, e.g. warmstart or ours}
OUT=$(realpath -m "${2:-runs/sharded_quality}")/$METHOD
EMBEDDINGS=$(realpath "${3:-runs/ranker/movielens/minilm}")
REPO=$PWD
COLDSTART=${COLDSTART:-coldstart}
COMMON="--model.method=$METHOD --data.embeddings_dir=$EMBEDDINGS --trainer.enable_progress_bar=false"
for run in two one torch; do
  case $run in
    two) config=configs/ranker/movielens_sharded.yaml; devices=2 ;;
    one) config=configs/ranker/movielens_sharded.yaml; devices=1 ;;
    torch) config=configs/ranker/movielens.yaml; devices=1 ;;
  esac
  rm -rf "$OUT/$run" && mkdir -p "$OUT/$run" && cd "$OUT/$run"
  start=$(date +%s)
  # shellcheck disable=SC2086 # COMMON is a list of options
  OMP_NUM_THREADS=1 $COLDSTART ranker fit --config "$REPO/$config" $COMMON \
    --trainer.devices=$devices > fit.out 2> fit.err
  echo "{\"bench\": \"sharded_quality\", \"method\": \"$METHOD\", \"run\": \"$run\", \"fit_seconds\": $(($(date +%s) - start))}"
  for stage in test validate; do
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 $COLDSTART ranker $stage --config "$REPO/$config" $COMMON --trainer.devices=1 \
      --ckpt_path last > $stage.out 2> $stage.err
    grep -E "(test|val)/(cold|warm|all)/recall@20 " $stage.out | tr -d '│' | awk -v m="$METHOD" -v r="$run" \
      '{printf "{\"bench\": \"sharded_quality\", \"method\": \"%s\", \"run\": \"%s\", \"metric\": \"%s\", \"value\": %.4f}\n", m, r, $1, $2}'
  done
  cd "$REPO"
done
