"""`python -m mmrole.tiny --family qwen2_5_vl`: a tiny Qwen2.5-VL made locally, its tokenizer converted from qwen.tiktoken.

The tokenizer is held to tiktoken itself: the same ranks through tiktoken's own byte-pair merging (with Qwen's regex,
on NFC text, as the Qwen tokenizers do) must give the same ids as our tokenizer.json on real MMRole text."""

import json
import socket
import unicodedata

import pytest
import tiktoken
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2_5_VLConfig

from mmrole.backends.transformers import load_processor
from mmrole.demo import tiny_vlm
from mmrole.demo.tiny import find_vocab_file
from mmrole.qwen_vl.tokenization_qwen import PAT_STR, load_tiktoken_ranks
from mmrole.tiny import main as tiny_main


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def tiktoken_qwen():
    """tiktoken's own encoder over the same ranks: the reference the converted tokenizer must equal."""
    return tiktoken.Encoding("qwen", pat_str=PAT_STR, mergeable_ranks=load_tiktoken_ranks(find_vocab_file()),
                             special_tokens={})


def mmrole_texts(mmrole_data, mmrole_reference):
    """Real MMRole text: every profile (English and Chinese), the published In-Test prompts, ground truths and
    mmrole-agent's answers, and the Chinese dialogues of the raw data."""
    texts = []
    for profiles in sorted(mmrole_data.glob("profiles/*/profiles.json")):
        texts += json.loads(profiles.read_text(encoding="utf-8")).values()
    for answers in sorted((mmrole_reference / "in-test_answers" / "mmrole-agent").glob("*.json")):
        for record in json.loads(answers.read_text(encoding="utf-8")):
            texts += [turn["value"] for turn in record["conversations"]] + [record["conversations"][1]["answer"]]
    for dialogue_file in sorted(mmrole_data.glob("dialogues/in-distribution/*/孙悟空_*.json")):
        for record in json.loads(dialogue_file.read_text(encoding="utf-8")):
            texts += [turn["value"] for turn in record.get("conversations", []) if isinstance(turn.get("value"), str)]
    return [text for text in texts if text]


def test_the_tokenizer_encodes_real_mmrole_text_as_tiktoken_does(tiny_qwen2_5_vl, tiktoken_qwen, mmrole_data,
                                                                mmrole_reference):
    converted = Tokenizer.from_file(str(tiny_qwen2_5_vl / "tokenizer.json"))
    texts = mmrole_texts(mmrole_data, mmrole_reference)
    chinese = [t for t in texts if any("\u4e00" <= c <= "\u9fff" for c in t)]
    assert len(texts) > 1500 and len(chinese) > 300  # both languages, in bulk
    differing = [text[:60] for text in texts
                 if converted.encode(text, add_special_tokens=False).ids
                 != tiktoken_qwen.encode_ordinary(unicodedata.normalize("NFC", text))]
    assert differing == []
    # decoding gives the text back (NFC), Chinese included
    assert all(converted.decode(converted.encode(t, add_special_tokens=False).ids) == unicodedata.normalize("NFC", t)
               for t in chinese[:50])


def test_the_merges_are_one_per_token_and_the_check_catches_a_foreign_vocabulary():
    ranks = load_tiktoken_ranks(find_vocab_file())
    merges = tiny_vlm.merge_pairs(ranks)
    assert len(merges) == len(ranks) - 256  # every multi-byte token, exactly once (as Qwen2's merges.txt)
    assert all(ranks[a + b] > max(ranks[a], ranks[b]) for a, b in merges[:2000])
    # a made-up vocabulary where "abc" cannot be made from two lower-ranked tokens
    broken = {bytes([i]): i for i in range(256)}
    broken[b"abc"] = 256
    with pytest.raises(ValueError, match="cannot be made from two lower-ranked tokens"):
        tiny_vlm.merge_pairs(broken)


def test_special_tokens_sit_at_qwen2_5_vl_ids_and_the_transformers_tokenizer_loads(tiny_qwen2_5_vl):
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_5_vl, local_files_only=True)
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
                "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<|file_sep|>": 151664}
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in expected} == expected
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    ids = tokenizer("<|im_start|>user\nHi<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == 151644 and ids[-1] == 151645  # special tokens are never split
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nHi"


def test_the_chat_template_renders_the_qwen2_5_vl_format(tiny_qwen2_5_vl):
    processor = load_processor(tiny_qwen2_5_vl)
    messages = [{"role": "system", "content": [{"type": "text", "text": "SYS"}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "PROMPT"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "ANSWER"}]}]
    assert processor.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>PROMPT"
        "<|im_end|>\n<|im_start|>assistant\nANSWER<|im_end|>\n")
    assert processor.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>PROMPT<|im_end|>\n<|im_start|>assistant\n")
    assert "{% generation %}" in processor.chat_template  # what TRL's assistant_only_loss needs


def test_the_checkpoint_is_a_transformers_qwen2_5_vl_with_the_family_image_settings(tiny_qwen2_5_vl):
    config = json.loads((tiny_qwen2_5_vl / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["text_config"]["vocab_size"] == 151936 and config["image_token_id"] == 151655
    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen2_5_vl, local_files_only=True, dtype=torch.float32)
    assert isinstance(model.config, Qwen2_5_VLConfig)
    image_processor = load_processor(tiny_qwen2_5_vl).image_processor
    assert (image_processor.patch_size, image_processor.merge_size) == (14, 2)
    from PIL import Image

    grid = image_processor(images=[Image.new("RGB", (640, 480))], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) // 4 <= 16  # the tiny pixel budget: at most 16 image tokens


def test_the_command_refuses_to_overwrite_and_bad_sizes(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert tiny_main(["--family", "qwen2_5_vl", "--output_dir", str(folder)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert tiny_main(["--family", "qwen2_5_vl", "--output_dir", str(tmp_path / "x"), "--hidden_size", "30"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # the Qwen-VL maker's flags are not this family's
        tiny_main(["--family", "qwen2_5_vl", "--output_dir", str(tmp_path / "y"), "--image_size", "56"])
    assert exit_.value.code == 2
