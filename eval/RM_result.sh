#!/usr/bin/env bash
# Result CSVs of one model's reviews, for In-Test and Out-Test (run from the repository root).
# Usage: bash eval/RM_result.sh [MODEL]   (default: mmrole-agent)
set -euo pipefail
MODEL="${1:-mmrole-agent}"
for SPLIT in in out; do
    if [ -d "eval/${SPLIT}-test_reviews/${MODEL}" ]; then
        python eval/RM_result.py \
            --input_dir "eval/${SPLIT}-test_reviews/${MODEL}" \
            --output_dir "eval/${SPLIT}-test_results/${MODEL}"
    fi
done
