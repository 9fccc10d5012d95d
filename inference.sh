#!/usr/bin/env bash
# Answers of an MRPA for In-Test and Out-Test (run from the repository root).
# Usage: bash inference.sh [MODEL_NAME [MODEL_PATH]] [-- extra inference.py flags]
#   e.g. bash inference.sh mmrole-agent model_weights/MMRole-Agent -- --no_random --batch_size 8
#   API models: bash inference.sh gpt-4-turbo -- --backend openai --model gpt-4-turbo
#   (MODEL_PATH goes to --model_path only when given: inference.py's default is model_weights/MMRole-Agent,
#   and --model_path with --backend openai is refused.) Exit status: the worst of the two splits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib.sh"
split_args 2 "$@"
MODEL="${POSITIONAL[0]:-mmrole-agent}"
MODEL_PATH=()
if [ -n "${POSITIONAL[1]:-}" ]; then
    MODEL_PATH=(--model_path "${POSITIONAL[1]}")
fi
run_split "$PYTHON" inference.py "${MODEL_PATH[@]}" --input_dir data/test/in-distribution \
    --output_dir "eval/in-test_answers/$MODEL" "${FLAGS[@]}"
run_split "$PYTHON" inference.py "${MODEL_PATH[@]}" --input_dir data/test/out-of-distribution \
    --output_dir "eval/out-test_answers/$MODEL" "${FLAGS[@]}"
exit "$STATUS"
