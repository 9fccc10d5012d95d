#!/usr/bin/env bash
# The MMRole-Eval reward model: full fine-tuning of Qwen-VL-Chat on judge samples (eval/build_RM_data.py), with the
# paper's settings (10 epochs, lr 1e-5 cosine, warmup 1%, weight decay 0.05, adam beta2 0.95, max length 4096,
# batch 4 per device x accumulation 8, ZeRO-3, bf16 on GPU, activation checkpointing, vision tower frozen except
# the resampler).
#
# Usage (from the repository root):
#   [MODEL=...] [DATA=...] [OUTPUT_DIR=...] [GPUS_PER_NODE=...] bash finetune/finetune_RM_ds.sh [finetune.py flags]
# Flags after the script name are passed to finetune.py and override the defaults below.
# Multi-node: run it on every node with NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT set (see torchrun_launch.sh).
# A rerun continues from the last checkpoint-N in OUTPUT_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/torchrun_launch.sh"

MODEL="${MODEL:-model_weights/Qwen-VL-Chat}"
DATA="${DATA:-RM_data/train/RM-train_23k.json}"
OUTPUT_DIR="${OUTPUT_DIR:-checkpoints/MMRole-Eval_RM}"

launch_finetune \
    --fix_vit True \
    --num_train_epochs 10 \
    --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 8 \
    --model_max_length 4096 \
    --deepspeed "$FINETUNE_DIR/ds_config_zero3.json" \
    "$@"
