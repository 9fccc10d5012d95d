"""Tiny checkpoints (`python -m mmrole.tiny`) and the one model loader (mmrole.qwen_vl.loading)."""

import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import mmrole  # noqa: F401  (registers the qwen model type)
from mmrole.demo import tiny
from mmrole.qwen_vl import loading
from mmrole.qwen_vl.configuration_qwen import QWenConfig
from mmrole.qwen_vl.loading import load_model_and_tokenizer
from mmrole.qwen_vl.modeling_qwen import QWenLMHeadModel


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "ckpt"
    assert tiny.main(["--output_dir", str(folder), "--seed", "5"]) == 0
    return folder


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may reach the network: name lookups and connections fail, and are recorded (the list is
    the fixture's value) in case a library swallows the error."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _safetensors_keys(folder: Path):
    keys = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            keys |= set(handle.keys())
    return keys


def _probe_logits(model, tokenizer, image_path=None):
    query = "Describe this picture in one word."
    if image_path is not None:
        query = tokenizer.from_list_format([{"image": str(image_path)}, {"text": query}])
    ids = torch.tensor([tokenizer.encode(query)])
    with torch.no_grad():
        return model(ids.to(model.device), use_cache=False).logits.float().cpu()


def test_tiny_folder_has_the_qwen_vl_chat_layout(tiny_dir, tiny_model, qwen_reference):
    reference = qwen_reference / "tiny-qwen-vl-chat"
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer_config.json", "qwen.tiktoken",
            "model.safetensors"} <= names
    ref_generation = json.loads((reference / "generation_config.json").read_text())
    ref_generation.pop("transformers_version")
    assert json.loads((tiny_dir / "generation_config.json").read_text()) == ref_generation
    assert json.loads((tiny_dir / "tokenizer_config.json").read_text()) == json.loads(
        (reference / "tokenizer_config.json").read_text())
    assert (tiny_dir / "qwen.tiktoken").read_bytes() == (reference / "qwen.tiktoken").read_bytes()
    assert _safetensors_keys(tiny_dir) == _safetensors_keys(reference)  # the original parameter names
    config = json.loads((tiny_dir / "config.json").read_text())
    assert (config["model_type"], config["seq_length"], config["hidden_size"], config["vocab_size"]) == (
        "qwen", 300, 128, 151936)
    assert config["visual"]["image_size"] == 56 and config["visual"]["output_dim"] == 128
    assert config["torch_dtype"] == json.loads((reference / "config.json").read_text())["torch_dtype"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert len(tokenizer) == 151860
    assert tiny_model.generation_config.chat_format == "chatml"


def test_same_seed_same_bytes_other_seed_other_weights(tiny_dir, tmp_path):
    tiny.write_tiny_checkpoint(tmp_path / "again", seed=5)
    tiny.write_tiny_checkpoint(tmp_path / "other", seed=6)
    original = (tiny_dir / "model.safetensors").read_bytes()
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == original
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != original


def test_weights_are_not_degenerate_and_padding_ids_are_never_predicted(tiny_model):
    params = dict(tiny_model.named_parameters())
    for name in ("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "lm_head.weight",
                 "transformer.visual.transformer.resblocks.0.mlp.c_fc.weight"):
        assert 0.015 < params[name][:151860].float().std().item() < 0.025, name
    assert params["lm_head.weight"][151860:].abs().sum() == 0
    assert not torch.equal(params["lm_head.weight"], params["transformer.wte.weight"])  # untied


def test_a_short_finetuning_run_learns(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).train()
    model.transformer.wte.requires_grad_(False)  # only to keep the test fast (its dense gradient is 19M floats)
    tokens = torch.tensor([[151644, 872, 198, 9707, 0, 151645, 198, 151644, 77091, 198, 13048, 1879, 151645]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 10 and losses[-1] < 0.5 * losses[0], losses


def test_save_pretrained_round_trip_plain_and_sharded(tiny_dir, tiny_model, tmp_path, qwen_reference):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    image = qwen_reference / "images" / "shapes_64x48.png"
    before = _probe_logits(tiny_model, tokenizer, image)
    for name, shard in (("plain", None), ("sharded", "30MB")):
        target = tmp_path / name
        if shard:
            tiny_model.save_pretrained(target, max_shard_size=shard)
            assert len(list(target.glob("*.safetensors"))) > 1 and (target / "model.safetensors.index.json").exists()
        else:
            tiny_model.save_pretrained(target)
        assert _safetensors_keys(target) == _safetensors_keys(tiny_dir)  # lm_head and wte both stored (untied)
        reloaded = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
        assert torch.equal(_probe_logits(reloaded, tokenizer, image), before), name


def test_device_map_runs_modules_through_accelerates_hooks(tiny_dir, tiny_model, tmp_path):
    """What a machine without GPUs can check of device_map. "auto" loads (everything lands on the CPU) with the
    same logits, also through load_model_and_tokenizer. A map that puts the second block and the lm_head on "disk"
    leaves their weights on the meta device and runs those modules through accelerate's per-module hooks, the
    mechanism that also splits a model over several GPUs: the logits stay the same, so no module reaches a
    parameter outside itself. Placement over several real devices is not tested here (no GPU)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    expected = _probe_logits(tiny_model, tokenizer)
    mapped = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32, device_map="auto").eval()
    assert torch.allclose(_probe_logits(mapped, tokenizer), expected, atol=1e-5)
    loaded, _ = load_model_and_tokenizer(tiny_dir, device_map="auto")
    assert not loaded.training and loaded.dtype == torch.float32
    assert torch.allclose(_probe_logits(loaded, tokenizer), expected, atol=1e-5)
    on_disk = ("transformer.h.1", "lm_head")
    device_map = {name: "cpu" for name in ("transformer.wte", "transformer.drop", "transformer.rotary_emb",
                                           "transformer.h.0", "transformer.ln_f", "transformer.visual")}
    device_map.update({name: "disk" for name in on_disk})
    offloaded = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32, device_map=device_map,
                                                      offload_folder=str(tmp_path)).eval()
    assert offloaded.hf_device_map == device_map
    assert offloaded.lm_head.weight.device.type == "meta" and hasattr(offloaded.lm_head, "_hf_hook")
    assert torch.allclose(_probe_logits(offloaded, tokenizer), expected, atol=1e-5)


def test_cli_help_and_refusal_to_overwrite(tiny_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tiny.main(["--help"])
    assert exit_info.value.code == 0 and "--output_dir" in capsys.readouterr().out
    assert tiny.main(["--output_dir", str(tiny_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert tiny.main(["--output_dir", str(tiny_dir / "x"), "--hidden_size", "130", "--num_heads", "4"]) == 2


def test_vocab_file_comes_from_model_weights_when_present_and_is_checked(tmp_path, qwen_reference, capsys):
    real = (qwen_reference / "tiny-qwen-vl-chat" / "qwen.tiktoken").read_bytes()
    local = tmp_path / "model_weights" / "Qwen-VL-Chat"
    local.mkdir(parents=True)
    (local / "qwen.tiktoken").write_bytes(real)
    assert tiny.find_vocab_file(tmp_path) == local / "qwen.tiktoken"
    found = tiny.find_vocab_file(tmp_path / "elsewhere")
    assert found.parts[-3:] == ("dashscope", "resources", "qwen.tiktoken") and found.read_bytes() == real

    (local / "qwen.tiktoken").write_text("x\n")
    with pytest.raises(ValueError, match=r"Qwen-VL-Chat/qwen\.tiktoken:1: not a `base64 rank` line"):
        tiny.find_vocab_file(tmp_path)
    truncated = tmp_path / "truncated.tiktoken"
    truncated.write_bytes(b"".join(real.splitlines(keepends=True)[:1000]))
    assert tiny.main(["--output_dir", str(tmp_path / "out"), "--vocab_file", str(truncated)]) == 2
    assert f"{truncated} is not the Qwen vocabulary: it holds 1000 distinct tokens, expected 151643" in (
        capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_loader_defaults_to_float32_eval_on_cpu(tiny_dir, tiny_model):
    model, tokenizer = load_model_and_tokenizer(tiny_dir)
    assert isinstance(model, QWenLMHeadModel) and not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert torch.equal(_probe_logits(model, tokenizer), _probe_logits(tiny_model, tokenizer))


def _linked_copy(source: Path, target: Path, skip=()):
    target.mkdir()
    for item in source.iterdir():
        if item.name not in skip:
            (target / item.name).symlink_to(item)
    return target


def test_loader_errors_name_the_problem(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_model_and_tokenizer(tmp_path / "missing")
    no_vocab = _linked_copy(tiny_dir, tmp_path / "no_vocab", skip={"qwen.tiktoken"})
    with pytest.raises(FileNotFoundError, match=r"no_vocab/qwen\.tiktoken does not exist"):
        load_model_and_tokenizer(no_vocab)
    other = _linked_copy(tiny_dir, tmp_path / "llama", skip={"config.json"})
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for load in (load_model_and_tokenizer, QWenConfig.from_pretrained, QWenLMHeadModel.from_pretrained):
        with pytest.raises(ValueError, match=r"llama/config\.json has model_type 'llama'"):
            load(other)
    with pytest.raises(FileNotFoundError, match="adapter_config.json does not exist"):
        load_model_and_tokenizer(tiny_dir, use_lora=True)


@pytest.mark.parametrize("name", ["nonexistent_dir", "Qwen/Qwen-VL-Chat"])
def test_config_and_model_load_from_local_folders_only(name, tmp_path, monkeypatch, no_network):
    """transformers would take a missing folder for a hub id and send requests (with retries)."""
    monkeypatch.chdir(tmp_path)
    for load in (QWenConfig.from_pretrained, QWenLMHeadModel.from_pretrained):
        with pytest.raises(FileNotFoundError, match=f"'{name}' is not a local folder"):
            load(name)
    assert no_network == []


def test_saved_config_names_no_missing_code_and_gives_the_dtype_under_both_names(tiny_dir, tmp_path):
    """A downloaded folder's auto_map names .py files that save_pretrained does not write; transformers 4.x
    (the original code's) reads the dtype as torch_dtype."""
    downloaded = _linked_copy(tiny_dir, tmp_path / "downloaded", skip={"config.json"})
    config = json.loads((tiny_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_qwen.QWenConfig",
                          "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"}
    (downloaded / "config.json").write_text(json.dumps(config))
    AutoModelForCausalLM.from_pretrained(downloaded, dtype=torch.bfloat16).save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "auto_map" not in saved
    assert saved["dtype"] == saved["torch_dtype"] == "bfloat16"
    assert AutoConfig.from_pretrained(tmp_path / "saved").dtype == torch.bfloat16


def test_lora_adapter_folder_loads_its_base_and_applies_the_adapter(tiny_dir, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["c_attn", "w1"], init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    expected = _probe_logits(peft_model.eval(), tokenizer)
    model, _ = load_model_and_tokenizer(adapter_dir)  # found by its adapter_config.json
    assert type(model).__name__.startswith("Peft") and not model.training
    assert torch.allclose(_probe_logits(model, tokenizer), expected, atol=1e-5)
    assert not torch.allclose(expected, _probe_logits(AutoModelForCausalLM.from_pretrained(
        tiny_dir, dtype=torch.float32).eval(), tokenizer), atol=1e-3)

    # A hub id as base model resolves to model_weights/<name>.
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/" + tiny_dir.name
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    monkeypatch.setattr(loading, "MODEL_WEIGHTS_DIR", tiny_dir.parent)
    assert loading.adapter_base_model(adapter_dir) == tiny_dir.parent / tiny_dir.name
    monkeypatch.setattr(loading, "MODEL_WEIGHTS_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="is not a local folder"):
        load_model_and_tokenizer(adapter_dir, use_lora=True)


def test_half_precision_loads_every_parameter_in_that_dtype_and_chats(tiny_dir, qwen_reference, monkeypatch):
    """bf16/fp16 as on a GPU (run here on CPU): no parameter stays float32 and an image chat runs."""
    monkeypatch.chdir(qwen_reference)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    query = tokenizer.from_list_format([{"image": "images/shapes_64x48.png"}, {"text": "What is it?"}])
    for dtype in (torch.bfloat16, torch.float16):
        model, _ = load_model_and_tokenizer(tiny_dir, dtype=dtype)
        assert {p.dtype for p in model.parameters()} == {dtype}
        answers = model.batch_chat(tokenizer, [query, "Hi"], do_sample=False, max_new_tokens=2)
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
