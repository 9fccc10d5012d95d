#!/usr/bin/env bash
# Result CSVs of one model's reviews, for In-Test and Out-Test (run from the repository root).
# Usage: bash eval/RM_result.sh [MODEL] [--] [extra RM_result.py flags, e.g. --strict or --partial]
#   (default: mmrole-agent). Exit status: the worst of the two splits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
split_args 1 "$@"
MODEL="${POSITIONAL[0]:-mmrole-agent}"
for SPLIT in in out; do
    if [ -d "eval/${SPLIT}-test_reviews/${MODEL}" ]; then
        run_split "$PYTHON" eval/RM_result.py \
            --input_dir "eval/${SPLIT}-test_reviews/${MODEL}" \
            --output_dir "eval/${SPLIT}-test_results/${MODEL}" "${FLAGS[@]}"
    fi
done
exit "$STATUS"
