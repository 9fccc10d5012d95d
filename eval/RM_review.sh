#!/usr/bin/env bash
# Reward-model review of one model's In-Test and Out-Test answers (run from the repository root), with the
# judge at RM_review.py's default --model_path model_weights/MMRole-Eval_RM (give --model_path to change it).
# Exit status: the worst of the two splits.
# Usage: bash eval/RM_review.sh [MODEL] [--] [extra RM_review.py flags]
#   e.g. bash eval/RM_review.sh mmrole-agent --no_random --batch_size 16
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
split_args 1 "$@"
MODEL="${POSITIONAL[0]:-mmrole-agent}"
for SPLIT in in out; do
    run_split "$PYTHON" eval/RM_review.py \
        --input_dir "eval/${SPLIT}-test_answers/${MODEL}" --output_dir "eval/${SPLIT}-test_reviews/${MODEL}" "${FLAGS[@]}"
done
exit "$STATUS"
