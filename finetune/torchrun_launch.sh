# Shared by finetune_ds.sh, finetune_RM_ds.sh and finetune_lora_ds.sh (sourced, not run): the torchrun launch.
#
# Environment (all optional):
#   GPUS_PER_NODE  processes on this node (default: the visible GPUs; 1 on a machine without GPU)
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   torchrun's multi-node settings (default 1, 0, localhost, 6001)
#   PYTHON         the interpreter (default python3); DRY_RUN=1 prints the command instead of running it
# On a machine without GPU the scripts train in float32 (bf16 needs a GPU) with DeepSpeed's CPU accelerator.

FINETUNE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$FINETUNE_DIR/../scripts/lib.sh"  # PYTHON (default python3)
export CUDA_DEVICE_MAX_CONNECTIONS=1

# CUDA GPUs this process may use (honours CUDA_VISIBLE_DEVICES); without nvidia-smi there are none to ask torch about.
if command -v nvidia-smi >/dev/null 2>&1; then
    VISIBLE_GPUS="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
else
    VISIBLE_GPUS=0
fi
GPUS_PER_NODE="${GPUS_PER_NODE:-$(( VISIBLE_GPUS > 0 ? VISIBLE_GPUS : 1 ))}"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-localhost}"
MASTER_PORT="${MASTER_PORT:-6001}"

# The paper trained in bf16; without a GPU the Trainer refuses bf16, so CPU runs stay in float32.
if (( VISIBLE_GPUS > 0 )); then PRECISION_ARGS=(--bf16 True); else PRECISION_ARGS=(); fi

# The paper's settings shared by MMRole-Agent and the reward model (each script adds epochs, batch sizes, length).
PAPER_ARGS=(
    --learning_rate 1e-5 --lr_scheduler_type cosine --warmup_ratio 0.01
    --weight_decay 0.05 --adam_beta2 0.95
    --activation_checkpointing True --lazy_preprocess True
    --eval_strategy no --per_device_eval_batch_size 1
    --save_strategy epoch --save_total_limit 100 --logging_steps 1
)

# launch_finetune ARGS...: torchrun finetune.py on $MODEL, $DATA, $OUTPUT_DIR (set by the calling script) with the
# paper's common settings, then ARGS (later arguments override earlier ones).
# Exit status (README, "Exit status"): torchrun reports any failed worker as 1, so the flags are checked first in
# one process (finetune.py --check_arguments): a usage error exits 2 before torchrun starts.
launch_finetune() {
    local arguments=(--model_name_or_path "$MODEL" --data_path "$DATA" --output_dir "$OUTPUT_DIR"
        "${PRECISION_ARGS[@]}" "${PAPER_ARGS[@]}" "$@")
    local command=("$PYTHON" -m torch.distributed.run
        --nproc_per_node "$GPUS_PER_NODE" --nnodes "$NNODES" --node_rank "$NODE_RANK"
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT"
        "$FINETUNE_DIR/finetune.py" "${arguments[@]}")
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        printf '%q ' "${command[@]}"; echo
    else
        "$PYTHON" "$FINETUNE_DIR/finetune.py" --check_arguments "${arguments[@]}"
        "${command[@]}"
    fi
}
