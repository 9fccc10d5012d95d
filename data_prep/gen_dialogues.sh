#!/usr/bin/env bash
# Generate dialogues about images with an OpenAI-compatible model (run from the repository root).
# Needs $OPENAI_API_KEY (and $OPENAI_BASE_URL for another endpoint).
# Usage: bash data_prep/gen_dialogues.sh [DATA_ROOT [OUTPUT_DIR [MODEL]]] [--] [extra flags, see --help]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
split_args 3 "$@"
DATA_ROOT="${POSITIONAL[0]:-data/raw}"
OUTPUT_DIR="${POSITIONAL[1]:-${DATA_ROOT}}"
MODEL="${POSITIONAL[2]:-gpt-4-turbo}"
"$PYTHON" data_prep/gen_dialogues.py \
    --data_root "${DATA_ROOT}" \
    --output_dir "${OUTPUT_DIR}" \
    --model "${MODEL}" \
    --concurrency 4 \
    "${FLAGS[@]}"
