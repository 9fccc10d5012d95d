#!/usr/bin/env bash
# MMRole-Agent with LoRA (peft; r 64, alpha 16, dropout 0.05 on c_attn, attn.c_proj, w1, w2): the paper's
# optimisation settings of finetune_ds.sh with ZeRO-2 (LoRA keeps the frozen base whole on every device).
# The result in OUTPUT_DIR is an adapter; merge it into a full checkpoint with finetune/merge_lora.py.
# Q-LoRA (GPU only): MODEL=model_weights/Qwen-VL-Chat-Int4 bash finetune/finetune_lora_ds.sh --q_lora True --bf16 False --fp16 True
#
# Usage (from the repository root):
#   [MODEL=...] [DATA=...] [OUTPUT_DIR=...] [GPUS_PER_NODE=...] bash finetune/finetune_lora_ds.sh [finetune.py flags]
# Flags after the script name are passed to finetune.py and override the defaults below
# (e.g. the reward model: DATA=RM_data/train/RM-train_23k.json ... --num_train_epochs 10 --model_max_length 4096).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/torchrun_launch.sh"

MODEL="${MODEL:-model_weights/Qwen-VL-Chat}"
DATA="${DATA:-data/train/train.json}"
OUTPUT_DIR="${OUTPUT_DIR:-checkpoints/MMRole-Agent-LoRA}"

launch_finetune \
    --use_lora True \
    --num_train_epochs 3 \
    --per_device_train_batch_size 8 \
    --gradient_accumulation_steps 4 \
    --model_max_length 3072 \
    --deepspeed "$FINETUNE_DIR/ds_config_zero2.json" \
    "$@"
