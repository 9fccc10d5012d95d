#!/usr/bin/env bash
# Installs what MMRole needs into the current Python. Safe to rerun: it skips what is there.
# On a machine without an NVIDIA GPU it installs torch==2.13.0 first, from TORCH_INDEX_URL when set
# (e.g. https://download.pytorch.org/whl/cpu for the CPU build where pip's own index holds only the
# multi-GB CUDA build; the machines this project is developed on keep the CPU wheel locally), and says
# so if a CUDA build arrived anyway. Set TORCH_SPEC to choose another torch.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    # The torch line of requirements.txt, so the two never disagree.
    "$PYTHON" -m pip install "${TORCH_SPEC:-$(grep -E '^torch[<>=]' requirements.txt)}"
  else
    "$PYTHON" -m pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
    if "$PYTHON" -c "import sys, torch; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
      echo "setup.sh: note: this torch is a CUDA build on a machine without an NVIDIA GPU; for the smaller CPU" \
           "build rerun after 'pip uninstall torch' with TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" >&2
    fi
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
# The package itself, editable (pyproject.toml): scripts in data_prep/, eval/, finetune/ and bench/ import `mmrole`
# without touching sys.path. Installed when missing (or when the checkout it pointed at is gone). If it points at
# another checkout of this repository, that is left alone (several checkouts may share one Python; the tests always
# run their own checkout's code, see tests/conftest.py) and said.
installed="$("$PYTHON" -I -c 'import importlib.util as u; s = u.find_spec("mmrole"); print(s.origin if s and s.origin else "")' 2>/dev/null || true)"
here="$(pwd -P)/mmrole/__init__.py"
if [ -z "$installed" ] || [ ! -f "$installed" ]; then
  "$PYTHON" -m pip install --no-deps -e .
elif [ "$(cd "$(dirname "$installed")" && pwd -P)/__init__.py" != "$here" ]; then
  echo "setup.sh: note: mmrole is installed from $(dirname "$(dirname "$installed")"); scripts run from this checkout's" \
       "subfolders import that copy unless PYTHONPATH=$(pwd -P) ('$PYTHON -m pip install --no-deps -e .' here points it here)" >&2
fi
