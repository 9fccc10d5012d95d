"""Fine-tune Qwen-VL-Chat into MMRole-Agent (role-play samples) or the MMRole-Eval reward model (judge samples).

The original MMRole finetune.py flags, on the Hugging Face Trainer with DeepSpeed; launch it with torchrun through
finetune/finetune_ds.sh, finetune_RM_ds.sh or finetune_lora_ds.sh (their defaults are the paper's), e.g.

    torchrun --nproc_per_node 8 finetune/finetune.py --model_name_or_path model_weights/Qwen-VL-Chat \\
        --data_path data/train/train.json --output_dir checkpoints/MMRole-Agent --deepspeed finetune/ds_config_zero3.json ...

Data: the Qwen-VL fine-tuning format (JSON list or JSON lines of {id, system, conversations}); image paths inside
<img></img> are relative to --image_dir (default: the working directory). Samples that cannot be trained on are
listed and skipped; longer samples are truncated at --model_max_length and counted. Batches are padded to their
longest sample (--pad_to_model_max_length True pads like the original). Each sample's `system` is used
(--use_sample_system False trains every sample with "You are a helpful assistant." like the original).
A rerun continues from the last checkpoint-N in --output_dir. Run with --help for every flag.
"""
import sys

from mmrole.finetune.train import main

if __name__ == "__main__":
    sys.exit(main())
