#!/usr/bin/env bash
# Table 5, radar chart and per-dimension bars from eval/{in,out}-test_results/<model>/*.csv.
# Usage: bash eval/report.sh [MODEL ...] [--] [extra report.py flags, e.g. --aggregation samples]
#   (default models: the six of the published results)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
split_args -1 "$@"
if [ "${#POSITIONAL[@]}" -eq 0 ]; then
    POSITIONAL=(gpt-4-turbo claude-3-opus qwen-vl-chat llava-next-mistral-7b yi-vl-6b mmrole-agent)
fi
"$PYTHON" eval/report.py --eval_dir eval --models "${POSITIONAL[@]}" --output_dir eval/report "${FLAGS[@]}"
