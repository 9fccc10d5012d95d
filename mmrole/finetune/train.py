"""The training entry behind finetune/finetune.py: MMRole-Agent and the reward model, full or LoRA, DeepSpeed or not.

Flow: arguments -> (on a CPU-only torchrun run: the gloo shim) -> the checkpoint to resume from -> tokenizer ->
data (checked and scanned once, skipped samples printed) -> model and its trainable parameters (--fix_vit or LoRA)
-> Trainer -> training, from the last checkpoint-N when there is one -> save (full weights, or the LoRA adapter).
"""

from __future__ import annotations

import atexit
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import transformers
from transformers import Trainer
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import get_last_checkpoint

from ..common.cli import redact_keys
from .arguments import ARGUMENT_CLASSES
from .cpu_distributed import install_cpu_gloo_backend
from .data import (BatchImageError, DataFileError, DataOptions, DataReport, ScanEntry, SupervisedCollator,
                   build_dataset, write_report)
from .loss import supervised_loss
from .model_setup import (apply_lora, check_q_lora, count_parameters, fix_vision_tower, load_for_training,
                          load_training_tokenizer, training_dtype)

SKIPPED_FILE = "skipped_samples.jsonl"


class FinetuneTrainer(Trainer):
    """The HF Trainer with three additions: the loss from logits at learned positions only (same value, see
    loss.py), length grouping from the scanned lengths (no extra preprocessing pass), and checkpoints saved with
    use_cache on (it is off only to train)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=dataset.lengths
            )
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.label_smoother is not None or self.compute_loss_func is not None or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return supervised_loss(model, inputs)

    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        config = getattr(self.model, "config", None)
        previous = getattr(config, "use_cache", None)
        if config is not None:
            config.use_cache = True
        try:
            super()._save(output_dir, state_dict=state_dict)
        finally:
            if config is not None:
                config.use_cache = previous


CHECK_ARGUMENTS = "--check_arguments"  # finetune_*.sh: check the flags in one process before torchrun starts


def _parser() -> transformers.HfArgumentParser:
    # allow_abbrev=False: with prefix matching a misspelt or shortened flag silently sets another one
    parser = transformers.HfArgumentParser(ARGUMENT_CLASSES, allow_abbrev=False)
    parser.description = ("Fine-tune Qwen-VL-Chat into MMRole-Agent or the MMRole-Eval reward model "
                          "(run under torchrun; see finetune/finetune_ds.sh).")
    return parser


def _refuse_bf16_without_gpu(parser, argv: Sequence[str]) -> None:
    """Before the training arguments are built: TrainingArguments(bf16=True) itself raises on a CPU."""
    if not torch.cuda.is_available() and _flag_is_true(argv, "--bf16"):
        parser.error("--bf16 needs a GPU: CPU runs train in float32, drop --bf16 (the finetune_*.sh scripts do)")


def _refuse(parser, unknown: Sequence[str], data_path: Optional[str]) -> None:
    """Usage errors (exit status 2, one line; a key given by mistake is not repeated)."""
    if unknown:
        parser.error(redact_keys(f"unrecognized arguments: {' '.join(unknown)}"))
    if not data_path:
        parser.error("--data_path is required")


def check_arguments(argv: Sequence[str]) -> None:
    """The usage errors of parse_arguments, found without building the training arguments (which would set up
    the distributed run): torchrun reports any failed worker as exit status 1, so the finetune_*.sh scripts
    check the flags first and a usage error keeps its status 2."""
    parser = _parser()
    _refuse_bf16_without_gpu(parser, argv)
    namespace, unknown = parser.parse_known_args(list(argv))
    _refuse(parser, unknown, getattr(namespace, "data_path", None))


def parse_arguments(argv: Optional[Sequence[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    check_arguments(argv)  # usage errors first, before the training arguments set anything up
    model_args, data_args, training_args, lora_args = _parser().parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args, lora_args


def _flag_is_true(argv: Sequence[str], flag: str) -> bool:
    """Whether the last occurrence of a boolean flag sets it (`--flag`, `--flag True`, `--flag=true`)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag:
            following = argv[i + 1] if i + 1 < len(argv) else ""
            value = following.lower() not in ("false", "0", "no") if not following.startswith("--") else True
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1].lower() not in ("false", "0", "no")
    return bool(value)


class RunSetupError(ValueError):
    """A mistake every process meets alike before training (a checkpoint to resume, the model folder)."""


def resume_checkpoint(value: Optional[str], output_dir: str) -> Optional[str]:
    """The checkpoint to continue from: see --resume_from_checkpoint (auto / True / False / a folder)."""
    choice = (value or "").strip()
    if choice.lower() in ("", "false", "no", "none"):
        return None
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if choice.lower() == "auto":
        return last
    if choice.lower() == "true":
        if last is None:
            raise RunSetupError(f"--resume_from_checkpoint True, but {output_dir} holds no checkpoint-N folder")
        return last
    if not os.path.isdir(choice):
        raise RunSetupError(f"--resume_from_checkpoint {choice}: no such checkpoint folder")
    return choice


def _gather_scan(entries: List[ScanEntry]) -> List[ScanEntry]:
    """All processes' scan entries (each process scanned every world_size-th sample)."""
    gathered: List[List[ScanEntry]] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, entries)
    return [entry for part in gathered for entry in part]


def load_data(path: str, tokenizer, data_args, training_args):
    options = DataOptions(
        max_len=training_args.model_max_length,
        use_sample_system=data_args.use_sample_system,
        default_system=data_args.default_system,
        image_dir=data_args.image_dir,
    )
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if distributed else 1
    rank = torch.distributed.get_rank() if distributed else 0
    return build_dataset(path, tokenizer, options, lazy=data_args.lazy_preprocess, shard=(rank, world),
                         gather=_gather_scan if world > 1 else None)


def report_data(report: DataReport, training_args, name: str) -> None:
    """Print what was skipped/truncated (main process) and list the skipped samples in output_dir."""
    if not training_args.should_save:
        return
    for line in report.lines():
        print(line, flush=True)
    if report.problems:
        os.makedirs(training_args.output_dir, exist_ok=True)
        where = Path(training_args.output_dir) / name
        write_report(report, where)
        print(f"  every skipped sample is listed in {where}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train; a data file that cannot be read, a missing model or checkpoint folder or an image gone since the
    start-up check ends the run with one line naming it (exit status 1) instead of a traceback from every process.
    Any other error keeps its traceback. With --check_arguments only the flags are checked (exit status 0 or 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if CHECK_ARGUMENTS in argv:
        check_arguments([arg for arg in argv if arg != CHECK_ARGUMENTS])
        return 0
    install_cpu_gloo_backend()  # must run before TrainingArguments sets up accelerate's state
    # DeepSpeed calls torch.distributed functions torch has deprecated, once per step: not ours to fix, only noise.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    arguments = parse_arguments(argv)
    training_args = arguments[2]
    try:
        train(*arguments)
    except (DataFileError, RunSetupError) as err:  # every process meets it alike, before any collective
        if training_args.process_index == 0:
            print(f"finetune.py: error: {_last_line(err)}", file=sys.stderr, flush=True)
        # torchrun stops the other processes as soon as one exits: none leaves before the first has said it.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        return 1
    except BatchImageError as err:  # maybe one process only (the one that drew the batch)
        print(f"finetune.py: error: {_last_line(err)}", file=sys.stderr, flush=True)
        return 1
    _finish_distributed_process()
    return 0


def _finish_distributed_process() -> None:
    """In a torchrun process: wait for every process, run the interpreter's exit handlers, then end the process
    without the interpreter's teardown. A process that finished first (rank 1, while rank 0 still wrote the final
    model) now and then aborted in that teardown ("terminate called without an active exception", SIGABRT: a C++
    thread of the CPU communication ops destroyed while still joinable), and torchrun reports the whole run as
    failed, after every file was written. Destroying the process group first did not prevent it (1 abort in 3
    runs of the ZeRO-3 test under load). Outside a distributed run this returns and the script exits normally."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    torch.distributed.barrier()
    atexit._run_exitfuncs()  # Python-level handlers still run: loggers, trackers' run.finish, temp file cleanup
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _last_line(err: BaseException) -> str:
    """The message itself: a DataLoader worker re-raises it after the worker's traceback."""
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else repr(err)


def train(model_args, data_args, training_args, lora_args) -> None:
    if training_args.warmup_note and training_args.should_save:
        print(training_args.warmup_note, flush=True)
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # nothing to pin for without a GPU
    check_q_lora(training_args.use_lora, lora_args.q_lora, zero3=is_deepspeed_zero3_enabled())
    checkpoint = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    transformers.set_seed(training_args.seed)

    # The data before the model: a broken data file is reported at once, not after minutes of loading weights.
    try:
        tokenizer = load_training_tokenizer(model_args.model_name_or_path)
    except FileNotFoundError as err:  # no model folder or no vocabulary file in it
        raise RunSetupError(str(err)) from err
    train_dataset, train_report = load_data(data_args.data_path, tokenizer, data_args, training_args)
    report_data(train_report, training_args, SKIPPED_FILE)
    eval_dataset = None
    if data_args.eval_data_path:
        eval_dataset, eval_report = load_data(data_args.eval_data_path, tokenizer, data_args, training_args)
        report_data(eval_report, training_args, "skipped_eval_samples.jsonl")
    if len(train_dataset) == 0:
        raise DataFileError(f"{data_args.data_path}: no usable training sample (see the report above)")

    dtype = training_dtype(training_args.fp16, training_args.bf16)
    model = load_for_training(model_args.model_name_or_path, dtype, tokenizer.pad_token_id, q_lora=lora_args.q_lora)
    if training_args.use_lora:
        model = apply_lora(model, lora_args, model_args.model_name_or_path, training_args.activation_checkpointing)
    elif training_args.fix_vit:
        fix_vision_tower(model)
    if training_args.should_save:
        print(f"{model_args.model_name_or_path}: {count_parameters(model)}", flush=True)

    collator = SupervisedCollator(
        tokenizer.pad_token_id,
        image_size=model.config.visual["image_size"],
        pad_to=training_args.model_max_length if data_args.pad_to_model_max_length else None,
    )
    trainer = FinetuneTrainer(model=model, args=training_args, processing_class=tokenizer,
                              train_dataset=train_dataset, eval_dataset=eval_dataset, data_collator=collator)
    if checkpoint and training_args.should_save:
        print(f"resuming from {checkpoint}", flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
