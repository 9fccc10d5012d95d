"""Fixtures of every test. Real material lives in ../shared (override with MMROLE_SHARED); tests that need it
skip cleanly when it is absent. The tests are grouped like the package (tests/common, qwen_vl, backends, data,
finetune, eval, serve, demo; package-wide ones here); helpers they share are in tests/support/."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MMROLE_SHARED", REPO.parent / "shared")).resolve()

# Scripts the tests start as subprocesses (data_prep/*.py, eval/*.py, finetune/*.sh, demo.sh, ...) must run this
# checkout's code: `pip install -e .` points `mmrole` at one checkout of possibly several on the machine. The
# repository root first on PYTHONPATH wins over the installed one in every child process (pytest.ini's `pythonpath`
# does the same for the tests themselves).
_INHERITED = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *_INHERITED])


def _shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mmrole_data() -> Path:
    """The raw MMRole-Data snapshot (in-distribution part)."""
    return _shared_path("mmrole_data")


@pytest.fixture(scope="session")
def mmrole_reference() -> Path:
    """Published In-Test answers, reviews, result CSVs and Table 5."""
    return _shared_path("mmrole_reference")


@pytest.fixture(scope="session")
def qwen_reference() -> Path:
    """Outputs of the original Qwen-VL-Chat code on a tiny random checkpoint."""
    return _shared_path("qwen_vl_reference")


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint (`python -m mmrole.tiny --family qwen2_5_vl`), made once per session."""
    from mmrole.demo.tiny_vlm import write_tiny_vlm

    return write_tiny_vlm(tmp_path_factory.mktemp("tiny-qwen2_5_vl") / "checkpoint", seed=0)
