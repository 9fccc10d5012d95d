"""End-to-end training on CPU through the finetune_*.sh scripts with a tiny checkpoint and real MMRole samples:
2 torchrun processes with ZeRO-3 (loss goes down, checkpoints load and generate, a rerun resumes from the last
checkpoint-N), 2 with ZeRO-2 and length-grouped batches (--fix_vit keeps the vision tower except the resampler; every
other weight changes, so both processes' optimizer partitions stepped), 1 with LoRA + merge."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmrole.demo.tiny import write_tiny_checkpoint
from mmrole.finetune.data import DataOptions, SupervisedCollator, build_dataset
from mmrole.qwen_vl.loading import load_model_and_tokenizer
from mmrole.qwen_vl.tokenization_qwen import from_list_format
from tests.support.training import character_image_samples, write_jsonl

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # DeepSpeed runs in several processes: about 2 minutes together
MAX_LEN = 352  # system + 258 image tokens + question leave room for the start of each answer
FAST_ARGS = [  # few, short steps; lr high enough for a tiny random model to learn visibly
    "--model_max_length", str(MAX_LEN), "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
    "--learning_rate", "5e-3", "--warmup_ratio", "0", "--save_strategy", "steps", "--save_steps", "2",
    "--logging_steps", "1", "--seed", "0",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_script(script: str, model: Path, data: Path, output_dir: Path, processes: int, *args: str,
               expect_status: int = 0) -> str:
    env = dict(os.environ, PYTHON=sys.executable, MODEL=str(model), DATA=str(data), OUTPUT_DIR=str(output_dir),
               GPUS_PER_NODE=str(processes), MASTER_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO))
    result = subprocess.run(["bash", str(REPO / "finetune" / script), *args], cwd=output_dir.parent, env=env,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == expect_status, f"{script} exited with {result.returncode}:\n{output[-6000:]}"
    return output


def logged_losses(output_dir: Path):
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [(entry["step"], entry["loss"], entry["epoch"]) for entry in state["log_history"] if "loss" in entry]


def training_loss(model, tokenizer, data: Path, image_root: Path) -> float:
    """Mean loss of the model over the training samples (training semantics, no dropout in the tiny model)."""
    dataset, _ = build_dataset(data, tokenizer, DataOptions(max_len=MAX_LEN, image_dir=image_root))
    collate = SupervisedCollator(tokenizer.pad_token_id, model.config.visual["image_size"])
    model.train()
    with torch.no_grad():
        losses = [model(**collate([dataset[i]])).loss.item() for i in range(len(dataset))]
    model.eval()
    return sum(losses) / len(losses)


def generates(model, tokenizer, image: Path) -> bool:
    query = from_list_format([{"image": str(image)}, {"text": "Who are you?"}])
    result = model.batch_chat_detailed(tokenizer, [query], do_sample=False, max_new_tokens=4)[0]
    return result.completion_tokens > 0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mmrole_data):
    root = tmp_path_factory.mktemp("finetune")
    model = write_tiny_checkpoint(root / "tiny-qwen-vl-chat", seed=0)
    samples = character_image_samples(mmrole_data, 6)
    missing = {"id": "image-not-here", "conversations": [
        {"from": "user", "value": from_list_format([{"image": "images/not/there.jpg"}, {"text": "Hi"}])},
        {"from": "assistant", "value": "Hello"}]}
    data = write_jsonl(root / "train.jsonl", samples[:3] + [missing] + samples[3:])
    clean = write_jsonl(root / "clean.jsonl", samples)
    base, tokenizer = load_model_and_tokenizer(model, device="cpu", dtype=torch.float32)
    image = mmrole_data / samples[0]["conversations"][0]["value"].split("<img>")[1].split("</img>")[0]
    return {"root": root, "model": Path(model), "data": data, "clean": clean, "tokenizer": tokenizer,
            "base_loss": training_loss(base, tokenizer, clean, mmrole_data), "image": image,
            "image_root": mmrole_data}


def test_zero3_two_processes_train_save_load_generate_and_resume(workspace):
    out = workspace["root"] / "zero3"
    image_root = str(workspace["image_root"])
    log = run_script("finetune_ds.sh", workspace["model"], workspace["data"], out, 2,
                     *FAST_ARGS, "--image_dir", image_root, "--max_steps", "4")
    # The bad sample is named and counted before training; the 6 good ones train.
    assert "7 samples, 6 used, 1 skipped" in log and "image-not-here" in log
    skipped = [json.loads(line) for line in (out / "skipped_samples.jsonl").read_text().splitlines()]
    assert [entry["id"] for entry in skipped] == ["image-not-here"]
    # Two processes: one RNG state each, and 6 samples / (2 x 1) = 3 steps per epoch.
    assert (out / "checkpoint-2" / "rng_state_1.pth").is_file()
    losses = logged_losses(out)
    assert [step for step, _, _ in losses] == [1, 2, 3, 4] and losses[2][2] == pytest.approx(1.0)
    assert losses[-1][1] < losses[0][1]

    tokenizer = workspace["tokenizer"]
    for folder in (out, out / "checkpoint-2"):
        model, folder_tokenizer = load_model_and_tokenizer(folder, device="cpu", dtype=torch.float32)
        assert generates(model, folder_tokenizer, workspace["image"]), folder
    trained_loss = training_loss(model, tokenizer, workspace["clean"], workspace["image_root"])
    assert trained_loss < workspace["base_loss"] - 0.1

    # A rerun with more steps continues from checkpoint-4 (optimizer, scheduler and step counter included).
    log = run_script("finetune_ds.sh", workspace["model"], workspace["data"], out, 2,
                     *FAST_ARGS, "--image_dir", image_root, "--max_steps", "6")
    assert f"resuming from {out / 'checkpoint-4'}" in log
    assert [step for step, _, _ in logged_losses(out)] == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6
    assert (out / "checkpoint-6" / "model.safetensors").is_file()


def test_zero2_two_processes_fix_vit_trains_all_but_the_vision_tower(workspace):
    out = workspace["root"] / "zero2"
    log = run_script("finetune_ds.sh", workspace["model"], workspace["clean"], out, 2, *FAST_ARGS,
                     "--image_dir", str(workspace["image_root"]), "--max_steps", "2",
                     "--per_device_train_batch_size", "2", "--deepspeed", str(REPO / "finetune" / "ds_config_zero2.json"),
                     "--train_sampling_strategy", "group_by_length")
    # 2 processes x 2 samples: DeepSpeed's batch of 4 (the Trainer saw both processes), 6 samples = 2 steps an epoch.
    assert "6 samples, 6 used, 0 skipped" in log
    assert [(step, epoch) for step, _, epoch in logged_losses(out)] == [(1, pytest.approx(0.5)), (2, pytest.approx(1.0))]
    model, tokenizer = load_model_and_tokenizer(out, device="cpu", dtype=torch.float32)
    assert generates(model, tokenizer, workspace["image"])
    assert training_loss(model, tokenizer, workspace["clean"], workspace["image_root"]) < workspace["base_loss"] - 0.1

    base = {k: v.float() for k, v in load_file(workspace["model"] / "model.safetensors").items()}
    trained = load_file(out / "model.safetensors")
    changed = {name for name in base if not torch.equal(base[name], trained[name].float())}
    visual = {name for name in base if name.startswith("transformer.visual.")}
    resampler = {name for name in visual if name.startswith("transformer.visual.attn_pool.")}
    assert changed & visual == resampler  # incl. pos_embed: the original's requires_grad_(True) unfreezes it
    assert "transformer.visual.attn_pool.query" in changed and "transformer.h.0.attn.c_attn.weight" in changed
    assert "lm_head.weight" in changed and "transformer.wte.weight" in changed


def test_lora_run_saves_an_adapter_that_loads_generates_and_merges(workspace):
    out = workspace["root"] / "lora"
    run_script("finetune_lora_ds.sh", workspace["model"], workspace["clean"], out, 1, *FAST_ARGS,
               "--image_dir", str(workspace["image_root"]), "--max_steps", "2")
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (64, 16, 0.05)
    assert set(config["target_modules"]) == {"c_attn", "attn.c_proj", "w1", "w2"}
    assert config["modules_to_save"] is None  # a chat model, as the original's rule
    assert not (out / "model.safetensors").exists()
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert not any(".visual." in name for name in adapter)
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in adapter.items())

    peft_model, tokenizer = load_model_and_tokenizer(out, device="cpu", dtype=torch.float32)
    assert generates(peft_model, tokenizer, workspace["image"])

    merged_dir = workspace["root"] / "lora-merged"
    result = subprocess.run([sys.executable, str(REPO / "finetune" / "merge_lora.py"), "--adapter_dir", str(out),
                             "--output_dir", str(merged_dir), "--dtype", "float32"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    ids = tokenizer("Tell me about yourself.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model(input_ids=ids).logits, atol=1e-4)
    assert generates(merged, tokenizer, workspace["image"])


def test_two_processes_name_an_unreadable_data_file_once_before_loading_the_model(workspace):
    broken = workspace["root"] / "broken.json"
    broken.write_text('[\n {"id": "a", "conversations": []},\n {"id": "b", \n]', encoding="utf-8")
    log = run_script("finetune_ds.sh", workspace["model"], broken, workspace["root"] / "broken-run", 2, *FAST_ARGS,
                     expect_status=1)
    # torchrun stops the other process when the first exits: the main one must have said it by then, and only it.
    assert log.count(f"finetune.py: error: {broken}: malformed JSON at line 4") == 1
    assert "trainable" not in log  # failed before the model was loaded
    assert 'File "/' not in log.split("finetune.py: error:")[0]  # no Python traceback from finetune.py before it
