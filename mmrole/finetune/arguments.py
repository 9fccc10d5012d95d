"""Command-line arguments of finetune/finetune.py: the original's four dataclasses (same flags, same defaults where
the original had them) plus the options this reproduction adds. transformers' TrainingArguments supplies the rest
(learning rate, epochs, batch sizes, --deepspeed, --bf16, --save_strategy, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import transformers

from .preprocess import DEFAULT_SYSTEM

LORA_TARGETS = ["c_attn", "attn.c_proj", "w1", "w2"]


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="model_weights/Qwen-VL-Chat", metadata={"help": "Local Qwen-VL-Chat-format folder to fine-tune."}
    )


@dataclass
class DataArguments:
    data_path: Optional[str] = field(
        default=None, metadata={"help": "Training data: a JSON list or JSON lines of {id, system, conversations}."}
    )
    eval_data_path: Optional[str] = field(default=None, metadata={"help": "Optional evaluation data (same format)."})
    lazy_preprocess: bool = field(
        default=True,
        metadata={"help": "Build each sample's tensors when it is drawn (default). False builds all of them up front."},
    )
    image_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Folder the <img> paths of the data are relative to (default: the working directory, "
                          "as the original). --image_root is the same flag (its earlier spelling).",
                  "aliases": ["--image_root"]},
    )
    use_sample_system: bool = field(
        default=True,
        metadata={"help": "Train each sample with its own `system` prompt (default). False reproduces the original, "
                          "which trained every sample with --default_system."},
    )
    default_system: str = field(
        default=DEFAULT_SYSTEM, metadata={"help": "System prompt of samples without `system` (and of all samples "
                                                  "with --use_sample_system False)."},
    )
    pad_to_model_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every batch to model_max_length like the original (slower, same loss). Default: pad "
                          "each batch to its longest sample."},
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Accepted for the original's flag; unused "
                                                                     "(models load from local folders only)."})
    optim: str = field(default="adamw_torch")
    model_max_length: int = field(
        default=8192, metadata={"help": "Maximum sequence length; longer samples are truncated (and counted)."}
    )
    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of the full model."})
    fix_vit: bool = field(
        default=True,
        metadata={"help": "Full fine-tuning: freeze the vision tower except its resampler (transformer.visual."
                          "attn_pool), as the original."},
    )
    report_to: Optional[str] = field(default="none", metadata={"help": "Where to report logs (e.g. wandb)."})
    resume_from_checkpoint: Optional[str] = field(
        default="auto",
        metadata={"help": "auto (default): continue from the last checkpoint-N in output_dir if there is one; "
                          "True: it must exist; False: start afresh; or a checkpoint folder."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the collator needs each sample's image paths."}
    )
    # Flags of the original scripts that transformers 5 renamed: accepted and passed on to the new names.
    warmup_ratio: Optional[float] = field(
        default=None, metadata={"help": "Linear warmup over this fraction of the steps (= --warmup_steps RATIO); a "
                                        "--warmup_steps above 0 overrides it."}
    )
    evaluation_strategy: Optional[str] = field(default=None, metadata={"help": "Alias of --eval_strategy."})

    def __post_init__(self):
        self.warmup_note: Optional[str] = None  # printed once by the main process (train.main)
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps:
                # The scripts always pass the paper's --warmup_ratio 0.01; a --warmup_steps given after it must win,
                # as transformers 4 let warmup_steps override warmup_ratio.
                self.warmup_note = (f"--warmup_steps {self.warmup_steps:g} overrides --warmup_ratio "
                                    f"{self.warmup_ratio:g}")
            else:
                self.warmup_steps = self.warmup_ratio
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        super().__post_init__()


@dataclass
class LoraArguments:
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: List[str] = field(default_factory=lambda: list(LORA_TARGETS))
    lora_weight_path: str = field(
        default="", metadata={"help": "Start from this LoRA adapter folder instead of a fresh adapter."}
    )
    lora_bias: str = "none"
    q_lora: bool = field(default=False, metadata={"help": "Q-LoRA on a GPTQ Int4 checkpoint (needs a CUDA GPU)."})
    lora_modules_to_save: str = field(
        default="auto",
        metadata={"help": "Modules trained in full beside LoRA: 'auto' = the original's rule (none for a chat model "
                          "or Q-LoRA, else wte,lm_head), 'none', or a comma-separated list."},
    )

    def modules_to_save(self, model_name_or_path: str) -> Optional[List[str]]:
        if self.lora_modules_to_save == "auto":
            # The original: a base (non-chat) model must learn the ChatML tokens' embeddings and output rows.
            chat_model = "chat" in model_name_or_path.lower()
            return None if self.q_lora or chat_model else ["wte", "lm_head"]
        if self.lora_modules_to_save.strip().lower() in ("", "none"):
            return None
        return [name.strip() for name in self.lora_modules_to_save.split(",") if name.strip()]


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments, LoraArguments)
