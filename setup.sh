#!/usr/bin/env bash
# Installs what MMRole needs into the current Python. Safe to rerun: it skips what is there.
# On a machine without an NVIDIA GPU it installs the CPU build of torch first (a plain `torch`
# requirement would pull a multi-GB CUDA build). Set TORCH_SPEC to choose another torch.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    # The torch line of requirements.txt, so the two never disagree.
    "$PYTHON" -m pip install "${TORCH_SPEC:-$(grep -E '^torch[<>=]' requirements.txt)}"
  else
    "$PYTHON" -m pip install "${TORCH_SPEC:-torch==2.13.0}"
  fi
fi
if ! "$PYTHON" - <<'PY' 2>/dev/null
import importlib.metadata as md, re, sys
from packaging.requirements import Requirement
for path in ("requirements.txt", "requirements-dev.txt"):
    for line in open(path):
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            if md.version(req.name) not in req.specifier:
                sys.exit(1)
PY
then
  "$PYTHON" -m pip install -r requirements.txt -r requirements-dev.txt
fi
