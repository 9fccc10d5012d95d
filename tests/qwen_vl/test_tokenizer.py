"""QWenTokenizer against the original Qwen-VL-Chat tokenizer's recorded outputs, plus save/load,
AutoTokenizer registration (never executing a folder's own .py files) and bad-input errors."""

import json
import pickle
import shutil
import unicodedata

import pytest
from transformers import AutoTokenizer

import mmrole  # noqa: F401  (registers QWenTokenizer)
from mmrole.qwen_vl import QWenTokenizer
from mmrole.qwen_vl.tokenization_qwen import from_list_format

IMG_START, IMG_END, IMG_PAD, EOD = 151857, 151858, 151859, 151643


@pytest.fixture(scope="module")
def checkpoint(qwen_reference):
    return qwen_reference / "tiny-qwen-vl-chat"


@pytest.fixture(scope="module")
def tok(checkpoint):
    return QWenTokenizer.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def expected(qwen_reference):
    return json.loads((qwen_reference / "expected.json").read_text(encoding="utf-8"))["tokenizer"]


def _mismatches(cases, compute, key):
    wrong = [(case, compute(case)) for case in cases if compute(case) != case[key]]
    return [(case.get("text", case.get("input")), got, case[key]) for case, got in wrong]


# ---- ids and attributes -----------------------------------------------------------------------


def test_special_ids_match_reference(tok, expected):
    special = expected["special_ids"]
    assert len(tok) == special["len_tokenizer"] == 151860
    assert tok.vocab_size == 151860
    for name, value in special.items():
        if name == "len_tokenizer":
            continue
        got = tok.convert_tokens_to_ids(f"<|{name}|>") if name.startswith("extra_") else getattr(tok, name)
        assert got == value, name


def test_every_special_token_has_its_original_id(tok):
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]
    names += ["<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>"]
    assert [tok.convert_tokens_to_ids(n) for n in names] == list(range(151643, 151860))
    assert [tok.decode([i]) for i in range(151643, 151860)] == names


def test_original_attributes(tok):
    assert tok.IMAGE_ST == ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>")
    assert (tok.image_start_tag, tok.image_end_tag, tok.image_pad_tag) == ("<img>", "</img>", "<imgpad>")
    assert (tok.ref_start_tag, tok.box_end_tag, tok.quad_start_tag) == ("<ref>", "</box>", "<quad>")
    assert (tok.eod_id, tok.im_start_id, tok.im_end_id) == (151643, 151644, 151645)
    assert (tok.img_start_id, tok.img_end_id, tok.img_pad_id) == (IMG_START, IMG_END, IMG_PAD)
    assert tok.errors == "replace"
    assert len(tok.mergeable_ranks) == 151643


# ---- encoding ---------------------------------------------------------------------------------


def test_encode_matches_reference(tok, expected):
    assert len(expected["encode"]) >= 17
    assert _mismatches(expected["encode"], lambda c: tok.encode(c["text"]), "ids") == []


def test_encode_with_only_image_tags_special_matches_reference(tok, expected):
    cases = expected["encode_allowed_special_image_tags_only"]
    assert cases
    compute = lambda c: tok.encode(c["text"], allowed_special=set(tok.IMAGE_ST))  # noqa: E731
    assert _mismatches(cases, compute, "ids") == []


def test_call_gives_the_same_ids_as_encode(tok, expected):
    assert len(expected["encode"]) >= 17
    for case in expected["encode"]:
        assert tok(case["text"])["input_ids"] == case["ids"]


def test_nfc_normalisation_before_bpe(tok):
    decomposed = "Cafe\u0301 na\u0308ive \u1100\u1161"  # e + combining acute, a + diaeresis, Hangul jamo
    assert decomposed != unicodedata.normalize("NFC", decomposed)
    assert tok.encode(decomposed) == tok.encode(unicodedata.normalize("NFC", decomposed))
    assert tok.decode(tok.encode(decomposed)) == unicodedata.normalize("NFC", decomposed)


def test_disallowed_and_plain_text_special_tokens(tok):
    assert tok.encode("<|im_end|>", allowed_special=set()) == [27, 91, 318, 6213, 91, 29]
    with pytest.raises(ValueError):
        tok.encode("<|im_end|>", allowed_special=set(), disallowed_special="all")
    assert tok("<|endoftext|>", split_special_tokens=True)["input_ids"] != [EOD]


def test_image_path_bytes_become_ids_and_pad_to_256(tok):
    path = "données/猫 photo.jpg"
    ids = tok.encode(f"x<img>{path}</img>y")
    start = ids.index(IMG_START)
    span = ids[start : start + 258]
    raw = path.encode("utf-8")
    assert span[0] == IMG_START and span[-1] == IMG_END
    assert span[1 : 1 + len(raw)] == list(raw)
    assert span[1 + len(raw) : -1] == [IMG_PAD] * (256 - len(raw))
    assert len(ids) == 258 + len(tok.encode("x")) + len(tok.encode("y"))
    assert tok.decode(ids) == f"x<img>{path}</img>y"


def test_image_path_of_exactly_256_bytes_fills_the_span(tok):
    path = "p/" + "a" * 250 + ".png"
    assert len(path.encode()) == 256
    ids = tok.encode(f"<img>{path}</img>")
    assert len(ids) == 258 and IMG_PAD not in ids
    assert tok.decode(ids) == f"<img>{path}</img>"


def test_tokenize_returns_original_token_forms(tok):
    tokens = tok.tokenize("Hi<|im_end|><img>ab</img>")
    assert tokens[0] == b"Hi" and tokens[1] == "<|im_end|>" and tokens[2] == "<img>"
    assert tok.convert_tokens_to_ids(tokens) == tok.encode("Hi<|im_end|><img>ab</img>")
    assert tok.convert_tokens_to_string(tokens[:2]) == "Hi<|im_end|>"


# ---- decoding and the list format -------------------------------------------------------------


def test_decode_matches_reference(tok, expected):
    cases = expected["decode"]
    assert len(cases) >= 10
    assert _mismatches(cases, lambda c: tok.decode(c["ids"], **c["kwargs"]), "text") == []


def test_skip_special_tokens_drops_image_tags_but_keeps_the_path(tok):
    ids = tok.encode("<img>a.png</img><ref>x</ref><quad>q</quad><|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "a.pngxq"
    assert tok.decode(ids, skip_special_tokens=True, keep_image_special=True) == "a.png<ref>x</ref><quad>q</quad>"


def test_decode_of_generated_ids_with_an_unclosed_image_tag(tok):
    # The original raised here; generated ids may hold a stray <img>, so it is decoded as plain tokens.
    assert tok.decode(tok.encode("ok ") + [151857] + tok.encode(" then")) == "ok <img> then"


def test_decode_batch_and_round_trip(tok):
    texts = ["Hello 世界 👍🏽", "Tab\there\r\n  spaces  ", "<|im_start|>user\nHi<|im_end|>"]
    assert tok.decode([tok.encode(t) for t in texts]) == texts
    assert tok.batch_decode([tok.encode(t) for t in texts]) == texts


def test_list_format_matches_reference(tok, expected):
    assert _mismatches(expected["from_list_format"], lambda c: tok.from_list_format(c["input"]), "output") == []
    # The module-level function (no vocabulary needed) renders the same text.
    assert _mismatches(expected["from_list_format"], lambda c: from_list_format(c["input"]), "output") == []
    assert _mismatches(expected["to_list_format"], lambda c: tok.to_list_format(c["input"]), "output") == []


def test_list_format_round_trip_and_bad_element(tok):
    elements = [{"image": "a.png"}, {"text": "Find "}, {"ref": "it", "box": [[1.9, 2, 3, 4]]}]
    text = tok.from_list_format(elements)
    assert text == "Picture 1: <img>a.png</img>\nFind <ref>it</ref><box>(1,2),(3,4)</box>"
    assert tok.to_list_format(text) == [
        {"text": "Picture 1: "}, {"image": "a.png"}, {"text": "\nFind "}, {"ref": "it"}, {"box": "(1,2),(3,4)"},
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unsupported"):
        tok.from_list_format([{"ref": "no box"}])


# ---- padding (HF batch API) -------------------------------------------------------------------


def test_pad_token_is_eod_and_batch_padding_works(tok):
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == tok.eod_id == EOD
    batch = tok(["Hello world, how are you?", "Hi"], padding=True, return_tensors="pt")
    assert set(batch.keys()) == {"input_ids", "attention_mask"}
    short = tok.encode("Hi")
    assert batch["input_ids"][1].tolist() == short + [EOD] * (batch["input_ids"].shape[1] - len(short))
    assert batch["attention_mask"][1].tolist() == [1] * len(short) + [0] * (batch["input_ids"].shape[1] - len(short))
    left = tok(["Hello world", "Hi"], padding=True, padding_side="left")
    assert left["input_ids"][1][-len(short) :] == short and left["input_ids"][1][0] == EOD


def test_pad_token_can_be_absent_like_the_original(checkpoint):
    bare = QWenTokenizer(vocab_file=str(checkpoint / "qwen.tiktoken"), pad_token=None)
    assert bare.pad_token_id is None
    bare.pad_token_id = bare.eod_id  # what the original fine-tuning script does
    assert bare.pad_token == "<|endoftext|>" and bare.pad_token_id == EOD


# ---- save / load / registration ---------------------------------------------------------------


def test_save_pretrained_round_trip(tok, checkpoint, tmp_path):
    saved = tmp_path / "saved"
    tok.save_pretrained(saved)
    assert (saved / "qwen.tiktoken").read_bytes() == (checkpoint / "qwen.tiktoken").read_bytes()
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "QWenTokenizer" and config["model_max_length"] == 8192
    reloaded = QWenTokenizer.from_pretrained(saved)
    text = "Picture 1: <img>images/x.png</img>\n<ref>a</ref><box>(1,2),(3,4)</box> 你好<|im_end|>"
    assert reloaded.encode(text) == tok.encode(text)
    assert (len(reloaded), reloaded.pad_token_id, reloaded.errors) == (151860, EOD, "replace")
    shutil.copy(checkpoint / "config.json", saved / "config.json")
    assert isinstance(AutoTokenizer.from_pretrained(saved), QWenTokenizer)


def test_pickle_round_trip(tok):
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("pickled <img>a.png</img>") == tok.encode("pickled <img>a.png</img>")


def _qwen_folder_with_remote_code(checkpoint, folder, marker):
    """A folder laid out like a downloaded Qwen-VL-Chat: auto_map entries pointing at .py files that
    would leave a marker file and raise if anything imported them."""
    folder.mkdir()
    shutil.copy(checkpoint / "qwen.tiktoken", folder / "qwen.tiktoken")
    config = json.loads((checkpoint / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_qwen.QWenConfig",
        "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = {
        "model_max_length": 8192,
        "tokenizer_class": "QWenTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    trap = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\nraise RuntimeError('downloaded code ran')\n"
    for name in ("tokenization_qwen.py", "configuration_qwen.py", "modeling_qwen.py"):
        (folder / name).write_text(trap)
    return folder


@pytest.mark.parametrize("trust_remote_code", [None, False, True])
def test_auto_tokenizer_never_runs_downloaded_code(checkpoint, tmp_path, trust_remote_code):
    marker = tmp_path / "remote_code_ran.txt"
    folder = _qwen_folder_with_remote_code(checkpoint, tmp_path / "Qwen-VL-Chat", marker)
    kwargs = {} if trust_remote_code is None else {"trust_remote_code": trust_remote_code}
    loaded = AutoTokenizer.from_pretrained(folder, **kwargs)
    assert type(loaded) is QWenTokenizer
    assert not marker.exists(), marker.read_text()
    assert loaded.encode("<|im_start|>user") == [151644, 872]


# ---- bad input ----------------------------------------------------------------------------------


def test_folder_without_vocab_file_names_the_folder(checkpoint, tmp_path):
    folder = tmp_path / "no_vocab"
    folder.mkdir()
    shutil.copy(checkpoint / "config.json", folder / "config.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "QWenTokenizer"}))
    for load in (QWenTokenizer.from_pretrained, AutoTokenizer.from_pretrained):
        with pytest.raises(FileNotFoundError, match="qwen.tiktoken") as error:
            load(folder)
        assert str(folder) in str(error.value)
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        QWenTokenizer.from_pretrained(tmp_path / "missing")


def test_unclosed_image_tag_names_tag_and_text(tok):
    with pytest.raises(ValueError, match="unclosed '<img>'") as error:
        tok.encode("Look: <img>pics/cat.png and more")
    assert "Look: <img>pics/cat.png" in str(error.value)
    with pytest.raises(ValueError, match="unclosed '<ref>'"):
        tok.to_list_format("a <ref>dangling")


def test_image_path_too_long_names_the_path(tok):
    path = "dir/" + "b" * 253 + ".png"
    assert len(path.encode()) == 261
    with pytest.raises(ValueError, match="at most 256") as error:
        tok.encode(f"<img>{path}</img>")
    assert path in str(error.value)
    multibyte = "图" * 86  # 258 bytes in UTF-8 although only 86 characters
    with pytest.raises(ValueError, match="258 bytes"):
        tok.encode(f"<img>{multibyte}</img>")


def test_unknown_ids_are_refused(tok):
    with pytest.raises(ValueError, match="151900"):
        tok.decode([9707, 151900])
    with pytest.raises(ValueError, match="fixed"):
        tok.add_tokens(["<new_token>"])
