"""Fine-tuning data: the original's tensors on every reference case, the `system` policy, dynamic padding (same
per-sample loss as padding to max_len), lazy loading with images per batch, truncation counts, bad samples."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmrole.common.prompts import ROLEPLAY_SYSTEM
from mmrole.finetune.data import (BatchImageError, DataFileError, DataOptions, SupervisedCollator, build_dataset,
                                  load_samples, read_records)
from mmrole.finetune.loss import supervised_loss
from mmrole.finetune.preprocess import IGNORE_INDEX, ChatMLEncoder, original_preprocess
from mmrole.qwen_vl import QWenTokenizer, preprocess_images
from mmrole.qwen_vl.tokenization_qwen import from_list_format
from tests.support.training import character_image_samples, write_jsonl

IM_START, IM_END, NEWLINE, EOD = 151644, 151645, 198, 151643
REFERENCE_IMAGE_SIZE = 56


# --- shared helpers (also used by test_finetune_train.py) -----------------------------------------------------

# --- fixtures --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok(qwen_reference):
    return QWenTokenizer.from_pretrained(qwen_reference / "tiny-qwen-vl-chat")


@pytest.fixture(scope="module")
def cases(qwen_reference):
    cases = json.loads((qwen_reference / "expected.json").read_text(encoding="utf-8"))["finetune_preprocess"]
    assert len(cases) >= 4
    return cases


@pytest.fixture(scope="module")
def tiny_model(qwen_reference):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(qwen_reference / "tiny-qwen-vl-chat", dtype=torch.float32).eval()


def _record(case, **extra):
    return {"id": case["name"], "conversations": case["conversations"], **extra}


# --- the original's tensors ------------------------------------------------------------------------------------

def test_original_preprocess_matches_every_reference_case(tok, cases):
    for case in cases:
        out = original_preprocess([case["conversations"]], tok, case["max_len"], case["system_message"])
        assert out["input_ids"][0].tolist() == case["input_ids"], case["name"]
        assert out["labels"][0].tolist() == case["labels"], case["name"]
        assert out["attention_mask"][0].tolist() == case["attention_mask"], case["name"]


def test_dataset_and_collator_reproduce_the_original_in_its_mode(tok, cases, qwen_reference, tmp_path):
    """--use_sample_system False --pad_to_model_max_length True: the same tensors as the original, per case, even
    for samples that carry another system prompt; images come from the image root, per batch."""
    for case in cases:
        data = write_jsonl(tmp_path / f"{case['name']}.jsonl", [_record(case, system="Ignored by the original.")])
        options = DataOptions(max_len=case["max_len"], use_sample_system=False, image_dir=qwen_reference)
        dataset, report = build_dataset(data, tok, options)
        assert report.problems == [] and len(dataset) == 1
        batch = SupervisedCollator(tok.pad_token_id, REFERENCE_IMAGE_SIZE, pad_to=case["max_len"])([dataset[0]])
        assert batch["input_ids"][0].tolist() == case["input_ids"], case["name"]
        assert batch["labels"][0].tolist() == case["labels"], case["name"]
        assert batch["attention_mask"][0].tolist() == case["attention_mask"], case["name"]
        if "<img>" in json.dumps(case["conversations"]):
            expected = preprocess_images([qwen_reference / "images/shapes_64x48.png"], REFERENCE_IMAGE_SIZE)
            assert torch.equal(batch["pixel_values"], expected)
        else:
            assert "pixel_values" not in batch
        assert (case["name"] == "truncated_over_max_len") == (report.truncated == [case["name"]])


def test_sample_system_is_used_by_default(tok, cases, tmp_path):
    """The system block carries the sample's own prompt (masked like the original's), the rest is unchanged."""
    case = next(c for c in cases if c["name"] == "multi_turn_two_rounds")
    data = write_jsonl(tmp_path / "system.jsonl", [_record(case, system=ROLEPLAY_SYSTEM), _record(case)])
    dataset, _ = build_dataset(data, tok, DataOptions(max_len=case["max_len"]))
    with_system, without_system = dataset[0]["tokenized"], dataset[1]["tokenized"]

    default_block = [IM_START] + tok.encode("system") + [NEWLINE] + tok.encode(case["system_message"]) + [IM_END, NEWLINE]
    own_block = [IM_START] + tok.encode("system") + [NEWLINE] + tok.encode(ROLEPLAY_SYSTEM) + [IM_END, NEWLINE]
    rest = case["input_ids"][len(default_block): case["num_non_pad"]]
    rest_labels = case["labels"][len(default_block): case["num_non_pad"]]
    assert with_system.input_ids == own_block + rest
    assert with_system.labels == [IM_START] + [IGNORE_INDEX] * (len(own_block) - 3) + [IM_END, NEWLINE] + rest_labels
    # No `system` in the sample: the default, i.e. exactly the original.
    assert without_system.input_ids == case["input_ids"][: case["num_non_pad"]]
    assert without_system.labels == case["labels"][: case["num_non_pad"]]


# --- dynamic padding -------------------------------------------------------------------------------------------

def _per_sample_losses(model, batch):
    with torch.no_grad():
        logits = model(**batch).logits
    losses = []
    for row in range(logits.size(0)):
        labels = batch["labels"][row, 1:]
        losses.append(F.cross_entropy(logits[row, :-1], labels, ignore_index=IGNORE_INDEX).item())
    return losses


def test_dynamic_padding_gives_the_per_sample_loss_of_padding_to_max_len(tok, cases, tiny_model, qwen_reference,
                                                                          tmp_path):
    max_len = 400
    data = write_jsonl(tmp_path / "mixed.jsonl", [_record(case) for case in cases])
    dataset, _ = build_dataset(data, tok, DataOptions(max_len=max_len, image_dir=qwen_reference))
    items = [dataset[i] for i in range(len(dataset))]
    dynamic = SupervisedCollator(tok.pad_token_id, REFERENCE_IMAGE_SIZE)(items)
    padded = SupervisedCollator(tok.pad_token_id, REFERENCE_IMAGE_SIZE, pad_to=max_len)(items)

    longest = max(len(item["tokenized"].input_ids) for item in items)
    assert dynamic["input_ids"].shape == (len(items), longest) and longest < max_len
    assert padded["input_ids"].shape == (len(items), max_len)
    assert torch.equal(padded["input_ids"][:, :longest], dynamic["input_ids"])
    assert (padded["labels"][:, longest:] == IGNORE_INDEX).all()

    tiny_model.train()  # training semantics (NTK alpha 1, no log-n): what the Trainer computes
    try:
        dynamic_losses = _per_sample_losses(tiny_model, dynamic)
        padded_losses = _per_sample_losses(tiny_model, padded)
        alone = [_per_sample_losses(tiny_model, SupervisedCollator(tok.pad_token_id, REFERENCE_IMAGE_SIZE)([item]))[0]
                 for item in items]
        with torch.no_grad():
            batch_loss_dynamic = tiny_model(**dynamic).loss.item()
            batch_loss_padded = tiny_model(**padded).loss.item()
    finally:
        tiny_model.eval()
    assert dynamic_losses == pytest.approx(padded_losses, rel=1e-5, abs=1e-5)
    assert dynamic_losses == pytest.approx(alone, rel=1e-5, abs=1e-5)
    assert batch_loss_dynamic == pytest.approx(batch_loss_padded, rel=1e-5)


def test_loss_from_learned_positions_only_equals_the_models_loss_and_gradients(tok, cases, tiny_model,
                                                                                qwen_reference, tmp_path):
    data = write_jsonl(tmp_path / "mixed.jsonl", [_record(case) for case in cases])
    dataset, _ = build_dataset(data, tok, DataOptions(max_len=400, image_dir=qwen_reference))
    batch = SupervisedCollator(tok.pad_token_id, REFERENCE_IMAGE_SIZE)([dataset[i] for i in range(len(dataset))])
    tiny_model.train()
    try:
        gradients = []
        for compute in (lambda: tiny_model(**batch).loss, lambda: supervised_loss(tiny_model, batch)):
            tiny_model.zero_grad()
            loss = compute()
            loss.backward()
            gradients.append((loss.item(), {name: p.grad.clone() for name, p in tiny_model.named_parameters()
                                            if p.grad is not None}))
    finally:
        tiny_model.zero_grad()
        tiny_model.eval()
    (full_loss, full_grads), (kept_loss, kept_grads) = gradients
    assert kept_loss == pytest.approx(full_loss, rel=1e-6)
    assert full_grads.keys() == kept_grads.keys() and "lm_head.weight" in full_grads
    for name in full_grads:
        assert torch.allclose(kept_grads[name], full_grads[name], rtol=1e-4, atol=1e-7), name


# --- lazy loading, image root, truncation ----------------------------------------------------------------------

def test_images_resolve_against_image_dir_or_the_working_directory(tok, cases, qwen_reference, tmp_path, monkeypatch):
    case = next(c for c in cases if c["name"] == "single_turn_with_image")
    data = write_jsonl(tmp_path / "image.jsonl", [_record(case)])
    dataset, report = build_dataset(data, tok, DataOptions(max_len=400, image_dir=qwen_reference))
    assert dataset[0]["images"] == [str(qwen_reference / "images/shapes_64x48.png")]
    # Without --image_dir the path is relative to the working directory, as the original.
    monkeypatch.chdir(tmp_path)
    dataset, report = build_dataset(data, tok, DataOptions(max_len=400))
    assert len(dataset) == 0 and "missing or unreadable image" in report.problems[0].message
    monkeypatch.chdir(qwen_reference)
    dataset, report = build_dataset(data, tok, DataOptions(max_len=400))
    assert report.problems == [] and dataset[0]["images"] == ["images/shapes_64x48.png"]


def test_lazy_and_eager_datasets_give_the_same_items_and_lengths(tok, mmrole_data, tmp_path):
    data = write_jsonl(tmp_path / "real.jsonl", character_image_samples(mmrole_data, 5))
    options = DataOptions(max_len=360, image_dir=mmrole_data)
    lazy, report = build_dataset(data, tok, options, lazy=True)
    eager, _ = build_dataset(data, tok, options, lazy=False)
    assert len(lazy) == len(eager) == 5 and report.problems == []
    for i in range(5):
        assert lazy[i]["tokenized"] == eager[i]["tokenized"]
        assert lazy.lengths[i] == len(lazy[i]["tokenized"].input_ids) <= 360
        assert lazy[i]["images"] and Path(lazy[i]["images"][0]).is_file()
    # The comments are longer than 360 tokens with their 258 image tokens: all truncated, all counted.
    full = [lazy[i]["tokenized"].full_length for i in range(5)]
    assert report.truncated == [lazy[i]["id"] for i in range(5) if full[i] > 360] and report.truncated


def test_truncation_never_cuts_an_image_span(tok, qwen_reference, tmp_path):
    image = {"image": "images/shapes_64x48.png"}
    record = {"id": "two-images", "conversations": [
        {"from": "user", "value": "Describe it."}, {"from": "assistant", "value": "A short answer."},
        {"from": "user", "value": from_list_format([image, {"text": "And this one?"}])},
        {"from": "assistant", "value": "Another answer."}]}
    data = write_jsonl(tmp_path / "cut.jsonl", [record])
    encoder = ChatMLEncoder(tok)
    whole = encoder.encode_conversation(record["conversations"], "You are a helpful assistant.", 10_000).input_ids
    image_start = whole.index(tok.img_start_id)
    dataset, report = build_dataset(data, tok, DataOptions(max_len=image_start + 100, image_dir=qwen_reference))
    item = dataset[0]
    assert item["tokenized"].input_ids == whole[:image_start] and item["images"] == []
    assert report.truncated == ["two-images"]


# --- bad input -------------------------------------------------------------------------------------------------

def test_bad_samples_are_named_skipped_and_counted(tok, mmrole_data, tmp_path):
    good = character_image_samples(mmrole_data, 2)
    user_only = {"id": "only-user", "conversations": [{"from": "user", "value": "Hello?"}]}
    assistant_first_only = {"id": "assistant-then-user", "conversations": [
        {"from": "assistant", "value": "Hi"}, {"from": "user", "value": "Hello?"}]}
    missing_image = {"id": "missing-image", "conversations": [
        {"from": "user", "value": from_list_format([{"image": "images/nope/none.jpg"}, {"text": "Who?"}])},
        {"from": "assistant", "value": "Me."}]}
    unknown_role = {"id": "gpt-role", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    bad_system = {"id": "bad-system", "system": ["a", "list"], "conversations": good[0]["conversations"]}
    answer_too_far = {"id": "answer-too-far", "conversations": [
        {"from": "user", "value": "word " * 500}, {"from": "assistant", "value": "Too late."}]}
    malformed = '{"id": "broken-json", "conversations": [{"from": "user", "value": "unterminated}'
    data = write_jsonl(tmp_path / "bad.jsonl", [good[0], user_only, assistant_first_only, missing_image, malformed,
                                                unknown_role, bad_system, "[1, 2]", answer_too_far, good[1]])
    dataset, report = build_dataset(data, tok, DataOptions(max_len=400, image_dir=mmrole_data))

    assert [dataset[i]["id"] for i in range(len(dataset))] == [good[0]["id"], good[1]["id"]]
    reasons = {problem.sample_id: problem.message for problem in report.problems}
    assert set(reasons) == {"only-user", "assistant-then-user", "missing-image", "broken-json", "gpt-role",
                            "bad-system", "line 8", "answer-too-far"}
    assert reasons["only-user"].startswith("no assistant turn")
    assert reasons["assistant-then-user"].startswith("no assistant turn")
    assert reasons["missing-image"].startswith("missing or unreadable image") and "images/nope/none.jpg" in reasons[
        "missing-image"]
    assert reasons["broken-json"].startswith("malformed JSON: line 5")
    assert reasons["gpt-role"].startswith("unknown role") and "'human'" in reasons["gpt-role"]
    assert reasons["bad-system"].startswith("bad system")
    assert reasons["line 8"].startswith("not a JSON object")
    assert reasons["answer-too-far"].startswith("no assistant token within model_max_length")
    summary = "\n".join(report.lines())
    assert "10 samples, 2 used, 8 skipped" in summary and "gpt-role" in summary
    assert all(problem.path == str(data) for problem in report.problems)


def test_an_image_gone_after_the_start_up_check_stops_the_batch_naming_sample_and_path(tok, mmrole_data, tmp_path):
    samples = character_image_samples(mmrole_data, 2)
    image_root = tmp_path / "root"
    for sample in samples:  # a private copy of each image, so that one can disappear
        relative = sample["conversations"][0]["value"].split("<img>")[1].split("</img>")[0]
        (image_root / relative).parent.mkdir(parents=True, exist_ok=True)
        (image_root / relative).write_bytes((mmrole_data / relative).read_bytes())
    data = write_jsonl(tmp_path / "two.jsonl", samples)
    dataset, report = build_dataset(data, tok, DataOptions(max_len=360, image_dir=image_root))
    assert report.problems == [] and len(dataset) == 2
    gone = dataset[1]["images"][0]
    assert gone != dataset[0]["images"][0]
    Path(gone).unlink()
    collate = SupervisedCollator(tok.pad_token_id, image_size=REFERENCE_IMAGE_SIZE)
    assert "pixel_values" in collate([dataset[0]])
    with pytest.raises(BatchImageError) as raised:
        collate([dataset[0], dataset[1]])
    message = str(raised.value)
    assert message.startswith(f"sample {dataset[1]['id']}: image {gone} ") and dataset[0]["id"] not in message


def test_a_json_list_that_does_not_parse_names_the_place(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n {"id": "a", "conversations": []},\n {"id": "b", \n]', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"broken\.json: malformed JSON at line 4"):
        read_records(path)


def test_json_list_and_json_lines_read_the_same_samples(mmrole_data, tmp_path):
    records = character_image_samples(mmrole_data, 3)
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(records, indent=2), encoding="utf-8")
    as_lines = write_jsonl(tmp_path / "lines.jsonl", records)
    assert load_samples(as_list)[0] == load_samples(as_lines)[0] and len(load_samples(as_list)[0]) == 3
