"""The model side of fine-tuning: loading for training, which parameters train (--fix_vit, LoRA, Q-LoRA), and
merging a LoRA adapter back into a full checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import torch

from ..common.store import PathLike
from ..qwen_vl.loading import check_model_folder, check_tokenizer_folder


def training_dtype(fp16: bool, bf16: bool) -> torch.dtype:
    return torch.float16 if fp16 else torch.bfloat16 if bf16 else torch.float32


def check_q_lora(use_lora: bool, q_lora: bool, zero3: bool = False) -> None:
    """Q-LoRA trains on a GPTQ-quantised (Int4) checkpoint, whose kernels exist only for CUDA GPUs."""
    if not q_lora:
        return
    if not use_lora:
        raise ValueError("--q_lora True needs --use_lora True (Q-LoRA trains a LoRA adapter on a quantised model)")
    if zero3:
        # The original only warned ("FSDP or ZeRO3 are not incompatible with QLoRA"); ZeRO-3 cannot partition the
        # packed Int4 weights, and each process needs the whole quantised model on its own GPU (q_lora_device_map).
        raise ValueError("--q_lora does not work with ZeRO-3: use --deepspeed finetune/ds_config_zero2.json "
                         "(finetune_lora_ds.sh's default)")
    if not torch.cuda.is_available():
        raise ValueError("--q_lora needs a CUDA GPU (GPTQ Int4 kernels); on this machine use --use_lora True without "
                         "--q_lora, or full fine-tuning")


def load_training_tokenizer(model_path: PathLike):
    from transformers import AutoTokenizer

    from ..qwen_vl import tokenization_qwen  # noqa: F401  (importing it registers QWenTokenizer)

    return AutoTokenizer.from_pretrained(check_tokenizer_folder(check_model_folder(model_path)), local_files_only=True)


def load_for_training(model_path: PathLike, dtype: torch.dtype, pad_token_id: int, q_lora: bool = False):
    """The model for training: use_cache off as the original; with q_lora the GPTQ Int4 checkpoint is loaded with
    GPTQConfig(bits=4) and placed on this process's GPU."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..qwen_vl import modeling_qwen  # noqa: F401  (importing it registers the qwen model type)

    folder = check_model_folder(model_path)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    config.use_cache = False
    kwargs = {"config": config, "dtype": dtype, "local_files_only": True}
    if q_lora:
        from transformers import GPTQConfig

        kwargs["quantization_config"] = GPTQConfig(bits=4, use_exllama=False)
        kwargs["device_map"] = q_lora_device_map()
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    model.config.pad_token_id = pad_token_id  # <|endoftext|>, as the original's tokenizer.pad_token_id
    return model


def q_lora_device_map() -> dict:
    """Where a Q-LoRA process loads the Int4 model: whole, on its own GPU (torchrun's LOCAL_RANK; 0 when the process
    was not started by torchrun). The original passed a device_map only to multi-process runs; given none,
    transformers 5 loads a GPTQ model on the CPU (GptqHfQuantizer.update_device_map), so it is named in every case."""
    return {"": int(os.environ.get("LOCAL_RANK") or 0)}


def fix_vision_tower(model) -> None:
    """Freeze transformer.visual except its resampler attn_pool, exactly as the original --fix_vit.

    As there, `attn_pool.requires_grad_(True)` also makes the resampler's sin-cos table (pos_embed, frozen at
    construction) trainable, while ln_post and proj after the resampler stay frozen.
    """
    visual = model.transformer.visual
    visual.requires_grad_(False)
    visual.attn_pool.requires_grad_(True)


def apply_lora(model, lora_args, model_name_or_path: str, activation_checkpointing: bool):
    """Wrap `model` in a peft LoRA model (fresh, or continuing lora_args.lora_weight_path)."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if lora_args.q_lora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=activation_checkpointing)
    if lora_args.lora_weight_path:
        model = PeftModel.from_pretrained(model, lora_args.lora_weight_path, is_trainable=True)
    else:
        config = LoraConfig(
            r=lora_args.lora_r,
            lora_alpha=lora_args.lora_alpha,
            target_modules=list(lora_args.lora_target_modules),
            lora_dropout=lora_args.lora_dropout,
            bias=lora_args.lora_bias,
            task_type="CAUSAL_LM",
            modules_to_save=lora_args.modules_to_save(model_name_or_path),
        )
        model = get_peft_model(model, config)
    if activation_checkpointing:
        # With frozen embeddings, checkpointed blocks need an input that requires grad to backpropagate at all.
        model.enable_input_require_grads()
    return model


def trainable_parameter_names(model) -> List[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def count_parameters(model) -> str:
    """'trainable N of M parameters (x%)' (ZeRO-3 partitions report their full size via ds_numel)."""
    def numel(parameter) -> int:
        return getattr(parameter, "ds_numel", parameter.numel())

    total = sum(numel(p) for p in model.parameters())
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return f"trainable {trainable:,} of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)"


def merge_lora(adapter_dir: PathLike, output_dir: PathLike, *, base_model: Optional[PathLike] = None,
               dtype: Optional[torch.dtype] = None, max_shard_size: str = "5GB") -> Path:
    """Merge a LoRA adapter into its base model and save a full checkpoint (weights, config, generation config,
    tokenizer) that AutoModelForCausalLM loads. The merge runs in float32; the result is saved in `dtype`
    (default: the dtype the base checkpoint is stored in)."""
    from ..qwen_vl.loading import adapter_base_model, load_model_and_tokenizer

    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists():
        raise FileExistsError(f"{output_dir} already holds a checkpoint; choose another --output_dir")
    base = Path(base_model) if base_model else adapter_base_model(adapter_dir)
    save_dtype = dtype or stored_dtype(base) or torch.float32
    model, tokenizer = load_model_and_tokenizer(
        adapter_dir, use_lora=True, device="cpu", dtype=torch.float32, base_model_path=base
    )
    merged = model.merge_and_unload().to(save_dtype)
    merged.config.use_cache = True
    merged.save_pretrained(output_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def stored_dtype(model_folder: PathLike) -> Optional[torch.dtype]:
    """The dtype a checkpoint's config.json says its weights are stored in (None if it says nothing usable)."""
    import json

    config = json.loads((check_model_folder(model_folder) / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype")
    value = getattr(torch, name, None) if isinstance(name, str) else None
    return value if isinstance(value, torch.dtype) else None
