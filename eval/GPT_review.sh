#!/usr/bin/env bash
# GPT-4-class judge reviews of one model's answers (e.g. to build reward-model training data).
# The key comes from $OPENAI_API_KEY (or the variable named by --api_key_env); never pass it as a flag.
# Exit status: the worst of the two splits.
# Usage: bash eval/GPT_review.sh [MODEL] [--] [extra GPT_review.py flags]
#   e.g. bash eval/GPT_review.sh mmrole-agent --model gpt-4-turbo --concurrency 8
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
split_args 1 "$@"
MODEL="${POSITIONAL[0]:-mmrole-agent}"
for SPLIT in in out; do
    run_split "$PYTHON" eval/GPT_review.py \
        --input_dir "eval/${SPLIT}-test_answers/${MODEL}" --output_dir "eval/${SPLIT}-test_gpt_reviews/${MODEL}" "${FLAGS[@]}"
done
exit "$STATUS"
