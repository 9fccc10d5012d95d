#!/usr/bin/env bash
# Quality-filter raw MMRole-Data dialogues (run from the repository root).
# Usage: bash data_prep/filter_dialogues.sh [DATA_ROOT [OUTPUT_DIR]] [--] [extra flags, see --help]
#   Then: python data_prep/build_data.py --data_root DATA_ROOT --dialogues_root OUTPUT_DIR ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
split_args 2 "$@"
DATA_ROOT="${POSITIONAL[0]:-../shared/mmrole_data}"
OUTPUT_DIR="${POSITIONAL[1]:-data/filtered}"
"$PYTHON" data_prep/filter_dialogues.py --data_root "${DATA_ROOT}" --output_dir "${OUTPUT_DIR}" "${FLAGS[@]}"
