"""Merge a LoRA adapter (the output of finetune_lora_ds.sh, or any of its checkpoint-N folders) into its base model
and save a full Qwen-VL-Chat-format checkpoint that AutoModelForCausalLM loads (after `import mmrole`) without peft.

    python finetune/merge_lora.py --adapter_dir checkpoints/MMRole-Agent-LoRA --output_dir checkpoints/MMRole-Agent-merged

The base model is the one named in adapter_config.json (found as written, relative to the adapter, or under
model_weights/), unless --base_model is given. The merge runs in float32; weights are saved in --dtype (default:
the dtype the base checkpoint is stored in). The tokenizer and generation config are copied along.

Exit status: 0 merged; 1 a write failed; 2 usage error (bad flags, no such adapter or base model folder,
--output_dir already holds a checkpoint).
"""
import sys

from mmrole.common.cli import EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser

DTYPES = ("auto", "float32", "bfloat16", "float16")


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--adapter_dir", required=True, help="LoRA adapter folder (holds adapter_config.json)")
    parser.add_argument("--output_dir", required=True, help="where the merged checkpoint is written (must not hold one)")
    parser.add_argument("--base_model", default=None, help="base model folder (default: the adapter config's)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="dtype of the saved weights")
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard (default 5GB)")
    args = parser.parse_args(argv)

    import torch

    from mmrole.finetune.model_setup import merge_lora

    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    try:
        out = merge_lora(args.adapter_dir, args.output_dir, base_model=args.base_model, dtype=dtype,
                         max_shard_size=args.max_shard_size)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        parser.exit(EXIT_USAGE, f"merge_lora.py: error: {err}\n")
    except OSError as err:  # a write failed
        parser.exit(EXIT_UNUSABLE, f"merge_lora.py: error: {err}\n")
    print(f"merged {args.adapter_dir} into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
