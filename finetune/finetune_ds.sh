#!/usr/bin/env bash
# MMRole-Agent: full fine-tuning of Qwen-VL-Chat on the role-play training samples, with the paper's settings
# (3 epochs, lr 1e-5 cosine, warmup 1%, weight decay 0.05, adam beta2 0.95, max length 3072, batch 8 per device x
# accumulation 4, ZeRO-3, bf16 on GPU, activation checkpointing, vision tower frozen except the resampler).
#
# Usage (from the repository root):
#   [MODEL=...] [DATA=...] [OUTPUT_DIR=...] [GPUS_PER_NODE=...] bash finetune/finetune_ds.sh [finetune.py flags]
# Flags after the script name are passed to finetune.py and override the defaults below, e.g.
#   bash finetune/finetune_ds.sh --image_dir /data/MMRole-Data --num_train_epochs 1
# Multi-node: run it on every node with NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT set (see torchrun_launch.sh).
# A rerun continues from the last checkpoint-N in OUTPUT_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/torchrun_launch.sh"

MODEL="${MODEL:-model_weights/Qwen-VL-Chat}"
DATA="${DATA:-data/train/train.json}"
OUTPUT_DIR="${OUTPUT_DIR:-checkpoints/MMRole-Agent}"

launch_finetune \
    --fix_vit True \
    --num_train_epochs 3 \
    --per_device_train_batch_size 8 \
    --gradient_accumulation_steps 4 \
    --model_max_length 3072 \
    --deepspeed "$FINETUNE_DIR/ds_config_zero3.json" \
    "$@"
