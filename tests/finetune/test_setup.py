"""Fine-tuning setup without training: the scripts' defaults (the paper's), the CPU gloo shim, which parameters
--fix_vit and LoRA train, Q-LoRA / bf16 on a CPU-only machine, resume choices, renamed flags, merge refusal."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmrole.finetune import cpu_distributed
from mmrole.finetune.arguments import LoraArguments
from mmrole.finetune.model_setup import (apply_lora, check_q_lora, fix_vision_tower, merge_lora, q_lora_device_map,
                                         trainable_parameter_names)
from mmrole.finetune.train import FinetuneTrainer, RunSetupError, main, parse_arguments, resume_checkpoint

REPO = Path(__file__).resolve().parents[2]
PAPER_COMMON = {"--learning_rate": "1e-5", "--lr_scheduler_type": "cosine", "--warmup_ratio": "0.01",
                "--weight_decay": "0.05", "--adam_beta2": "0.95", "--activation_checkpointing": "True",
                "--lazy_preprocess": "True", "--eval_strategy": "no", "--save_strategy": "epoch"}


def dry_run(script: str, *args: str, **env: str) -> list:
    environment = {k: v for k, v in os.environ.items() if k not in ("GPUS_PER_NODE", "MODEL", "DATA", "OUTPUT_DIR")}
    environment.update(env, DRY_RUN="1", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(REPO / "finetune" / script), *args], env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def option_values(command: list) -> dict:
    """The value each --option takes in the end (later occurrences win, as in argparse)."""
    values = {}
    for i, word in enumerate(command):
        if word.startswith("--") and i + 1 < len(command) and not command[i + 1].startswith("--"):
            values[word] = command[i + 1]
    return values


@pytest.mark.parametrize("script, expected", [
    ("finetune_ds.sh", {"--num_train_epochs": "3", "--per_device_train_batch_size": "8",
                        "--gradient_accumulation_steps": "4", "--model_max_length": "3072", "--fix_vit": "True",
                        "--model_name_or_path": "model_weights/Qwen-VL-Chat", "--data_path": "data/train/train.json",
                        "--output_dir": "checkpoints/MMRole-Agent", "deepspeed": "ds_config_zero3.json"}),
    ("finetune_RM_ds.sh", {"--num_train_epochs": "10", "--per_device_train_batch_size": "4",
                           "--gradient_accumulation_steps": "8", "--model_max_length": "4096", "--fix_vit": "True",
                           "--output_dir": "checkpoints/MMRole-Eval_RM", "deepspeed": "ds_config_zero3.json"}),
    ("finetune_lora_ds.sh", {"--num_train_epochs": "3", "--use_lora": "True", "--model_max_length": "3072",
                             "--output_dir": "checkpoints/MMRole-Agent-LoRA", "deepspeed": "ds_config_zero2.json"}),
])
def test_script_defaults_are_the_papers_and_drop_bf16_without_gpu(script, expected):
    command = dry_run(script)
    values = option_values(command)
    for option, value in {**PAPER_COMMON, **expected}.items():
        if option == "deepspeed":
            assert values["--deepspeed"] == str(REPO / "finetune" / value)
        else:
            assert values[option] == value, option
    assert command[command.index("-m") + 1] == "torch.distributed.run"
    assert values["--nproc_per_node"] == "1" and values["--nnodes"] == "1"  # no GPU here: one process
    assert "--bf16" not in command  # bf16 needs a GPU (the Trainer refuses it on CPU)


def test_script_environment_and_extra_arguments_override_the_defaults():
    command = dry_run("finetune_ds.sh", "--num_train_epochs", "1", "--image_root", "/data/mmrole",
                      MODEL="m", DATA="d.json", OUTPUT_DIR="out", GPUS_PER_NODE="4", NNODES="2", NODE_RANK="1",
                      MASTER_ADDR="10.1.2.3", MASTER_PORT="7000")
    values = option_values(command)
    assert values["--num_train_epochs"] == "1" and values["--image_root"] == "/data/mmrole"
    assert command.index("--num_train_epochs") < len(command) - 4  # the default is still there, overridden later
    assert (values["--model_name_or_path"], values["--data_path"], values["--output_dir"]) == ("m", "d.json", "out")
    assert (values["--nproc_per_node"], values["--nnodes"], values["--node_rank"]) == ("4", "2", "1")
    assert (values["--master_addr"], values["--master_port"]) == ("10.1.2.3", "7000")


SCRIPTS = ("finetune_ds.sh", "finetune_RM_ds.sh", "finetune_lora_ds.sh")


def finetune_arguments(command: list) -> list:
    """The words of a dry-run command after finetune.py (what finetune.py parses)."""
    return command[next(i for i, word in enumerate(command) if word.endswith("finetune.py")) + 1:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_pass_model_data_output_once_and_the_users_arguments_last(script):
    extra = ["--num_train_epochs", "1", "--image_root", "/data/mmrole", "--warmup_steps", "5"]
    command = dry_run(script, *extra, MODEL="m", DATA="d.json", OUTPUT_DIR="out")
    arguments = finetune_arguments(command)
    for option, value in (("--model_name_or_path", "m"), ("--data_path", "d.json"), ("--output_dir", "out")):
        assert arguments.count(option) == 1, option
        assert arguments[arguments.index(option) + 1] == value
    assert arguments[-len(extra):] == extra
    assert command.count(str(REPO / "finetune" / "finetune.py")) == 1


def test_a_warmup_steps_given_to_a_script_overrides_its_warmup_ratio(tmp_path):
    command = dry_run("finetune_ds.sh", "--warmup_steps", "7", OUTPUT_DIR=str(tmp_path))
    arguments = finetune_arguments(command)
    at = arguments.index("--deepspeed")  # a DeepSpeed config would set up DeepSpeed in this test process
    del arguments[at:at + 2]
    assert option_values(arguments)["--warmup_ratio"] == "0.01"
    training = parse_arguments(arguments)[2]
    assert training.get_warmup_steps(1000) == 7
    assert training.warmup_note == "--warmup_steps 7 overrides --warmup_ratio 0.01"
    # Even a ratio of 0 gives way; without --warmup_steps the ratio applies and nothing is said.
    base = ["--data_path", "x.json", "--output_dir", str(tmp_path)]
    assert parse_arguments(base + ["--warmup_ratio", "0", "--warmup_steps", "3"])[2].get_warmup_steps(1000) == 3
    training = parse_arguments(base + ["--warmup_ratio", "0.01"])[2]
    assert training.get_warmup_steps(1000) == 10 and training.warmup_note is None


def test_cpu_gloo_shim_applies_only_to_multi_process_torchrun_without_gpu(monkeypatch):
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    monkeypatch.setattr(PartialState, "_prepare_backend", PartialState._prepare_backend)  # restored afterwards
    original = PartialState._prepare_backend
    for env, applies in (({}, False), ({"LOCAL_RANK": "0", "WORLD_SIZE": "1"}, False),
                         ({"LOCAL_RANK": "0", "WORLD_SIZE": "2"}, not torch.cuda.is_available())):
        for name in ("LOCAL_RANK", "WORLD_SIZE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert cpu_distributed.needs_cpu_gloo_backend() == applies
        assert cpu_distributed.install_cpu_gloo_backend() == applies
        assert (PartialState._prepare_backend is not original) == applies
    # Installed: no accelerator -> gloo across processes; the explicit cpu=True path is left as accelerate has it.
    state = object.__new__(PartialState)
    assert PartialState._prepare_backend(state, cpu=False) == ("gloo", DistributedType.MULTI_CPU)
    assert PartialState._prepare_backend(state, cpu=True) == original(state, cpu=True)
    assert cpu_distributed.install_cpu_gloo_backend()  # a second install does not wrap twice
    assert PartialState._prepare_backend(state, cpu=False) == ("gloo", DistributedType.MULTI_CPU)
    # --ddp_backend gloo: accelerate (1.15) keeps the backend but still counts one process; the shim must step in too.
    if not torch.cuda.is_available():
        assert PartialState._prepare_backend(state, cpu=False, backend="gloo") == ("gloo", DistributedType.MULTI_CPU)


@pytest.fixture()
def fresh_model(qwen_reference):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(qwen_reference / "tiny-qwen-vl-chat", dtype=torch.float32)


def test_fix_vit_trains_everything_but_the_vision_tower_before_the_resampler(fresh_model):
    names = [name for name, _ in fresh_model.named_parameters()]
    fix_vision_tower(fresh_model)
    trainable = set(trainable_parameter_names(fresh_model))
    visual = {n for n in names if n.startswith("transformer.visual.")}
    assert trainable == (set(names) - visual) | {n for n in visual if n.startswith("transformer.visual.attn_pool.")}
    # As the original: attn_pool.requires_grad_(True) unfreezes the sin-cos table too; ln_post and proj stay frozen.
    assert "transformer.visual.attn_pool.pos_embed" in trainable
    assert not {"transformer.visual.ln_post.weight", "transformer.visual.proj", "transformer.visual.conv1.weight"} & trainable


def test_lora_targets_the_language_model_blocks_only(fresh_model):
    model = apply_lora(fresh_model, LoraArguments(), "model_weights/Qwen-VL-Chat", activation_checkpointing=True)
    trainable = trainable_parameter_names(model)
    assert trainable and all("lora_" in name for name in trainable)
    wrapped = {name.split(".lora_")[0].split("base_model.model.")[1] for name in trainable}
    layers = fresh_model.config.num_hidden_layers
    assert wrapped == {f"transformer.h.{i}.{m}" for i in range(layers)
                       for m in ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2")}
    assert model.peft_config["default"].r == 64 and model.peft_config["default"].lora_alpha == 16


def test_lora_modules_to_save_follow_the_original_rule():
    assert LoraArguments().modules_to_save("model_weights/Qwen-VL-Chat") is None
    assert LoraArguments().modules_to_save("model_weights/Qwen-VL") == ["wte", "lm_head"]
    assert LoraArguments(q_lora=True).modules_to_save("model_weights/Qwen-VL") is None
    assert LoraArguments(lora_modules_to_save="none").modules_to_save("Qwen-VL") is None
    assert LoraArguments(lora_modules_to_save="lm_head, wte").modules_to_save("x-chat") == ["lm_head", "wte"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_q_lora_and_bf16_without_gpu_fail_with_a_clear_message(capsys):
    with pytest.raises(ValueError, match="--q_lora needs a CUDA GPU"):
        check_q_lora(use_lora=True, q_lora=True)
    with pytest.raises(ValueError, match="needs --use_lora True"):
        check_q_lora(use_lora=False, q_lora=True)
    with pytest.raises(SystemExit):
        parse_arguments(["--data_path", "x.json", "--output_dir", "out", "--bf16", "True"])
    assert "--bf16 needs a GPU" in capsys.readouterr().err


def test_q_lora_loads_the_model_whole_on_the_process_gpu_and_refuses_zero3(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert q_lora_device_map() == {"": 0}  # one process, not started by torchrun: the first GPU, not the CPU
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert q_lora_device_map() == {"": 3}
    with pytest.raises(ValueError, match="does not work with ZeRO-3"):
        check_q_lora(use_lora=True, q_lora=True, zero3=True)
    check_q_lora(use_lora=False, q_lora=False, zero3=True)  # ZeRO-3 without Q-LoRA is the paper's setting


class _LengthsOnly(torch.utils.data.Dataset):
    """Items without input_ids: only `lengths` can tell the sampler how long they are."""

    def __init__(self, lengths):
        self.lengths = list(lengths)

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, index):
        return {"index": index}


def padding_waste(order, lengths, batch_size):
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(batch) * max(lengths[i] for i in batch) - sum(lengths[i] for i in batch) for batch in batches)


@pytest.mark.parametrize("strategy, grouped", [("group_by_length", True), ("random", False)])
def test_train_sampler_groups_by_the_scanned_lengths_only_when_asked(fresh_model, tmp_path, strategy, grouped):
    from transformers import TrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = [(37 * i) % 101 + 1 for i in range(256)]
    dataset = _LengthsOnly(lengths)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                             train_sampling_strategy=strategy, report_to="none", seed=0)
    trainer = FinetuneTrainer(model=fresh_model, args=args, train_dataset=dataset)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) == grouped
    torch.manual_seed(0)
    order = list(sampler)
    assert sorted(order) == list(range(256))
    # Batches of per-device size x accumulation (4) drawn in this order pad far less when grouped (about 0.08 of a
    # shuffled order's padding here; another shuffle gives about 1).
    shuffled = torch.randperm(256, generator=torch.Generator().manual_seed(1)).tolist()
    ratio = padding_waste(order, lengths, 4) / padding_waste(shuffled, lengths, 4)
    assert (ratio < 0.5) == grouped, ratio


def test_a_data_file_that_cannot_be_read_ends_the_run_with_one_line(qwen_reference, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"id": "a", "conversations": []},\n {"id": "b", \n]', encoding="utf-8")
    status = main(["--model_name_or_path", str(qwen_reference / "tiny-qwen-vl-chat"), "--data_path", str(broken),
                   "--output_dir", str(tmp_path / "out"), "--report_to", "none"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert f"finetune.py: error: {broken}: malformed JSON at line 4" in err
    # Readable, but not one sample can be trained on: the report names it, then the same kind of one-line ending.
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text('{"id": "only-user", "conversations": [{"from": "user", "value": "Hi"}]}\n', encoding="utf-8")
    status = main(["--model_name_or_path", str(qwen_reference / "tiny-qwen-vl-chat"), "--data_path", str(nothing),
                   "--output_dir", str(tmp_path / "out"), "--report_to", "none"])
    captured = capsys.readouterr()
    assert status == 1 and "only-user" in captured.out
    assert f"finetune.py: error: {nothing}: no usable training sample" in captured.err


def test_a_missing_model_or_checkpoint_folder_ends_the_run_with_one_line(qwen_reference, tmp_path, capsys):
    data = tmp_path / "one.jsonl"
    data.write_text('{"id": "a", "conversations": [{"from": "user", "value": "Hi"}, '
                    '{"from": "assistant", "value": "Hello"}]}\n', encoding="utf-8")
    common = ["--data_path", str(data), "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    status = main(["--model_name_or_path", str(tmp_path / "no-such-model"), *common])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert err.startswith("finetune.py: error: ") and "no-such-model" in err
    status = main(["--model_name_or_path", str(qwen_reference / "tiny-qwen-vl-chat"), *common,
                   "--resume_from_checkpoint", str(tmp_path / "checkpoint-7")])
    err = capsys.readouterr().err
    assert status == 1 and f"finetune.py: error: --resume_from_checkpoint {tmp_path / 'checkpoint-7'}: no such" in err


def test_an_image_gone_before_its_batch_ends_the_run_naming_sample_and_path(qwen_reference, mmrole_data, tmp_path,
                                                                             capsys, monkeypatch):
    from mmrole.finetune import train as train_module
    from tests.support.training import character_image_samples, write_jsonl

    sample = character_image_samples(mmrole_data, 1)[0]
    relative = sample["conversations"][0]["value"].split("<img>")[1].split("</img>")[0]
    image = tmp_path / "root" / relative
    image.parent.mkdir(parents=True)
    image.write_bytes((mmrole_data / relative).read_bytes())
    data = write_jsonl(tmp_path / "one.jsonl", [sample])
    real_build = train_module.build_dataset

    def build_then_lose_the_image(*args, **kwargs):  # the image passes the start-up check, then disappears
        built = real_build(*args, **kwargs)
        image.unlink()
        return built

    monkeypatch.setattr(train_module, "build_dataset", build_then_lose_the_image)
    status = main(["--model_name_or_path", str(qwen_reference / "tiny-qwen-vl-chat"), "--data_path", str(data),
                   "--output_dir", str(tmp_path / "out"), "--image_root", str(tmp_path / "root"),
                   "--model_max_length", "352", "--max_steps", "1", "--per_device_train_batch_size", "1",
                   "--save_strategy", "no", "--report_to", "none"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert f"finetune.py: error: sample {sample['id']}: image {image} cannot be read any more" in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_original_flag_names_are_accepted(tmp_path):
    _, data, training, lora = parse_arguments(["--data_path", "x.json", "--output_dir", str(tmp_path),
                                               "--warmup_ratio", "0.01", "--evaluation_strategy", "no"])
    assert training.get_warmup_steps(1000) == 10 and training.eval_strategy == "no"
    assert (training.fix_vit, training.use_lora, data.use_sample_system, data.pad_to_model_max_length) == (
        True, False, True, False)
    assert (lora.lora_r, lora.lora_alpha, lora.lora_dropout) == (64, 16, 0.05)
    with pytest.raises(SystemExit):
        parse_arguments(["--output_dir", str(tmp_path)])  # no --data_path


def test_resume_choices(tmp_path):
    out = tmp_path / "run"
    assert resume_checkpoint("auto", str(out)) is None  # nothing yet: start afresh
    with pytest.raises(RunSetupError, match="holds no checkpoint"):
        resume_checkpoint("True", str(out))
    for step in (2, 10, 4):
        (out / f"checkpoint-{step}").mkdir(parents=True)
    assert resume_checkpoint("auto", str(out)) == str(out / "checkpoint-10")
    assert resume_checkpoint("True", str(out)) == str(out / "checkpoint-10")
    assert resume_checkpoint("False", str(out)) is None
    assert resume_checkpoint(str(out / "checkpoint-4"), str(out)) == str(out / "checkpoint-4")
    with pytest.raises(RunSetupError, match="no such checkpoint folder"):
        resume_checkpoint(str(out / "checkpoint-99"), str(out))


def test_merge_lora_refuses_to_overwrite_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        merge_lora(tmp_path / "adapter", tmp_path)


@pytest.mark.slow  # a subprocess that imports torch, transformers and DeepSpeed
def test_finetune_help_lists_the_original_and_new_flags():
    result = subprocess.run([sys.executable, str(REPO / "finetune" / "finetune.py"), "--help"],
                            capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0
    for flag in ("--model_name_or_path", "--data_path", "--lazy_preprocess", "--fix_vit", "--use_lora", "--q_lora",
                 "--lora_r", "--model_max_length", "--image_dir", "--image_root", "--use_sample_system", "--pad_to_model_max_length",
                 "--warmup_ratio", "--resume_from_checkpoint"):
        assert flag in result.stdout, flag


@pytest.mark.slow  # each case runs a wrapper, then finetune.py in a subprocess
@pytest.mark.parametrize("script, flag, message", [
    ("finetune_ds.sh", ["--learning_rat", "2e-5"], "unrecognized arguments: --learning_rat 2e-5"),
    ("finetune_RM_ds.sh", ["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    ("finetune_lora_ds.sh", ["--lora_ran", "8"], "unrecognized arguments: --lora_ran 8"),
])
def test_a_usage_error_through_the_scripts_is_exit_status_2_before_torchrun(tmp_path, script, flag, message):
    """torchrun reports any failed worker as 1; the scripts check the flags first, so a misspelt or shortened
    flag (no prefix matching) is a usage error (2), said once, and no worker is started."""
    environment = {k: v for k, v in os.environ.items() if k not in ("GPUS_PER_NODE", "DRY_RUN")}
    environment.update(PYTHON=sys.executable, OUTPUT_DIR=str(tmp_path / "out"), GPUS_PER_NODE="2")
    result = subprocess.run(["bash", str(REPO / "finetune" / script), *flag], env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count(message) == 1 and "torch.distributed" not in result.stderr
    assert not (tmp_path / "out").exists()
