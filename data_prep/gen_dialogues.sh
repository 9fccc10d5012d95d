#!/usr/bin/env bash
# Generate dialogues about images with an OpenAI-compatible model (run from the repository root).
# Needs $OPENAI_API_KEY (and $OPENAI_BASE_URL for another endpoint).
# Usage: bash data_prep/gen_dialogues.sh [DATA_ROOT] [OUTPUT_DIR] [MODEL] [extra flags, see --help]
set -euo pipefail
DATA_ROOT="${1:-data/raw}"
OUTPUT_DIR="${2:-${DATA_ROOT}}"
MODEL="${3:-gpt-4-turbo}"
shift $(( $# < 3 ? $# : 3 ))
python data_prep/gen_dialogues.py \
    --data_root "${DATA_ROOT}" \
    --output_dir "${OUTPUT_DIR}" \
    --model "${MODEL}" \
    --concurrency 4 \
    "$@"
