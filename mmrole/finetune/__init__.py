"""Fine-tuning Qwen-VL-Chat (MMRole-Agent, the MMRole-Eval reward model): data, model setup, the training entry.

- preprocess.py: ChatML ids and labels exactly as the original finetune.py (`original_preprocess`), padding
- data.py: reading and checking samples, the start-up scan, the lazy dataset, the per-batch collator
- model_setup.py: loading for training, --fix_vit, LoRA / Q-LoRA, merging an adapter
- arguments.py, train.py: the command line of finetune/finetune.py and its flow
- cpu_distributed.py: the small shim that lets torchrun + DeepSpeed run several processes on a CPU-only machine
"""
