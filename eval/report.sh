#!/usr/bin/env bash
# Table 5, radar chart and per-dimension bars from eval/{in,out}-test_results/<model>/*.csv.
# Usage: bash eval/report.sh [MODEL ...]   (default: the six models of the published results)
set -euo pipefail
if [ "$#" -eq 0 ]; then
    set -- gpt-4-turbo claude-3-opus qwen-vl-chat llava-next-mistral-7b yi-vl-6b mmrole-agent
fi
python eval/report.py --eval_dir eval --models "$@" --output_dir eval/report
