"""Multi-process DeepSpeed training on a machine without an accelerator (tests, the CPU demo).

The problem (accelerate 1.x with the HF Trainer): `PartialState._prepare_backend` picks a backend only for an
accelerator, or for the CPU when `cpu=True`; but `cpu=True` (the Trainer's `use_cpu`) switches DeepSpeed off. So
under torchrun on a CPU-only machine accelerate chooses no backend and believes it runs one process, while
DeepSpeed itself has joined a 2-rank gloo group. The Trainer then fills DeepSpeed's "auto" batch sizes for a world
size of 1 and DeepSpeed rejects the config (train_batch_size != micro batch * accumulation * world size).

The fix: when, and only when, the process was started by torchrun with more than one process, there is no CUDA
device, and accelerate settles on a single process (DistributedType.NO, whether or not --ddp_backend named a
backend), let that one choice return MULTI_CPU with gloo (or the named backend). accelerate then counts the
processes and DeepSpeed (its CPU accelerator communicates over gloo too) trains normally. GPU runs never touch it.
"""

from __future__ import annotations

import os

import torch

_INSTALLED_ATTR = "_mmrole_cpu_gloo"


def needs_cpu_gloo_backend() -> bool:
    """A torchrun-launched multi-process run on a machine without a CUDA device."""
    launched_by_torchrun = int(os.environ.get("LOCAL_RANK", -1)) != -1
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return launched_by_torchrun and world_size > 1 and not torch.cuda.is_available()


def install_cpu_gloo_backend() -> bool:
    """Patch accelerate's backend choice as described above, if this run needs it. Returns whether it did."""
    if not needs_cpu_gloo_backend():
        return False
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState._prepare_backend
    if getattr(original, _INSTALLED_ATTR, False):
        return True

    def prepare_backend(self, cpu: bool = False, sagemaker_dp=False, backend=None):
        chosen, distributed_type = original(self, cpu, sagemaker_dp, backend)
        # Decide on the type, not the backend: with --ddp_backend gloo accelerate returns ("gloo", NO), still one
        # process. A backend the user named is kept; none named means gloo.
        if distributed_type == DistributedType.NO and not cpu:
            return chosen or "gloo", DistributedType.MULTI_CPU
        return chosen, distributed_type

    setattr(prepare_backend, _INSTALLED_ATTR, True)
    PartialState._prepare_backend = prepare_backend
    return True
