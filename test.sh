#!/usr/bin/env bash
# The test command: installs what the tests need, then runs the whole suite on CPU.
# Extra arguments go to pytest (e.g. `bash test.sh -k prompts`).
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
