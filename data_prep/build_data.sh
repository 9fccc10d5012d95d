#!/usr/bin/env bash
# Build train.json and the test sets from raw MMRole-Data (run from the repository root).
# Usage: bash data_prep/build_data.sh [DATA_ROOT [OUTPUT_DIR [TEST_IDS_FILE]]] [--] [extra flags, see --help]
#   With TEST_IDS_FILE (one sample id a line) the test sets are exactly those samples (the official
#   split); without it the split is sampled as in the paper.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
split_args 3 "$@"
DATA_ROOT="${POSITIONAL[0]:-../shared/mmrole_data}"
OUTPUT_DIR="${POSITIONAL[1]:-data}"
TEST_IDS="${POSITIONAL[2]:-}"
"$PYTHON" data_prep/build_data.py \
    --data_root "${DATA_ROOT}" \
    --output_dir "${OUTPUT_DIR}" \
    --image_prefix images/ \
    --seed 42 \
    ${TEST_IDS:+--test_ids "${TEST_IDS}"} \
    "${FLAGS[@]}"
