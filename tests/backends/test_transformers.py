"""The `transformers` backend on the tiny Qwen2.5-VL (tests/conftest.py: tiny_qwen2_5_vl).

Expected answers come from transformers itself, one request at a time: the checkpoint's processor renders the
messages with its chat template, processes the one image, and `model.generate` decodes greedily; the backend's
batched, left-padded answers must equal them."""

import json
import shutil

import pytest
import torch
from PIL import Image

from mmrole.backends import make_backend
from mmrole.backends.base import BackendError, ChatRequest, GenerationParams
from mmrole.backends.transformers import CheckpointError, TransformersBackend, chat_messages, load_image_text_model

GREEDY = GenerationParams(greedy=True, max_new_tokens=10)


@pytest.fixture(scope="module")
def backend(tiny_qwen2_5_vl):
    return make_backend("transformers", model_path=tiny_qwen2_5_vl, batch_size=3)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    shapes = {"wide.png": (160, 90), "tall.png": (60, 200), "square.jpg": (300, 300), "small.png": (30, 30),
              "thin.png": (2, 600)}  # thin: an aspect ratio Qwen2.5-VL's processor refuses (> 200)
    for number, (name, size) in enumerate(shapes.items()):
        Image.new("RGB", size, (40 * number, 200 - 30 * number, 90)).save(folder / name)
    return folder


def requests_of(images):
    prompts = [("Hello there, partner. What do you see?", "wide.png"),
               ("你好，孙悟空！这张图片里有什么？" * 4, "tall.png"),
               ("x", "square.jpg"),
               ("A much longer prompt about the image, " * 25, "small.png"),
               ("Describe it in the voice of Hermione Granger.", "wide.png")]
    return [ChatRequest.single(text, image=str(images / name), system="You are a role-playing assistant.",
                               key=(f"s{i}",)) for i, (text, name) in enumerate(prompts)]


def one_at_a_time(model, processor, request, max_new_tokens):
    """What a user of transformers writes for one request."""
    text = processor.apply_chat_template(chat_messages(request), tokenize=False, add_generation_prompt=True)
    images = [Image.open(path).convert("RGB") for path in request.images()]
    inputs = processor(text=[text], images=[images], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    return processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_batched_greedy_answers_equal_one_at_a_time_generate(backend, images):
    requests = requests_of(images)
    expected = [one_at_a_time(backend.model, backend.processor, r, GREEDY.max_new_tokens) for r in requests]
    assert len(set(expected)) == len(expected)  # the answers depend on the prompt: the comparison means something
    results = backend.generate(requests, GREEDY)  # batches of 3: padded rows of different lengths
    assert [r.text for r in results] == expected
    assert all(r.finish_reason == "length" and r.completion_tokens == 10 for r in results)
    lengths = [r.prompt_tokens for r in results]
    assert lengths[3] > lengths[1] > lengths[0] > lengths[2] > 0  # per row, image tokens included, no padding


def test_generation_settings(backend, images):
    request = requests_of(images)[:1]
    first = backend.generate(request, GREEDY)[0].text
    stop = first.strip()[2:5]
    stopped = backend.generate(request, GenerationParams(greedy=True, max_new_tokens=10, stop=(stop,)))[0]
    assert stopped.text == first[:first.index(stop)] and stopped.finish_reason == "stop"
    sampled = [backend.generate(request, GenerationParams(max_new_tokens=8, temperature=1.5, seed=s))[0].text
               for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]  # the seed decides
    assert backend.generation_kwargs(GenerationParams(greedy=True))["max_new_tokens"] == 512  # none in the checkpoint


def test_bad_requests_fail_alone_and_name_the_checkpoint_and_image(backend, images, tiny_qwen2_5_vl):
    requests = requests_of(images)[:2]
    bad = [ChatRequest.single("thin", image=str(images / "thin.png"), system="S", key=("thin",)),
           ChatRequest.single("gone", image=str(images / "missing.png"), system="S", key=("gone",))]
    results = backend.generate([requests[0], bad[0], requests[1], bad[1]], GREEDY)
    assert [r.text for r in (results[0], results[2])] == [r.text for r in backend.generate(requests, GREEDY)]
    rejected, missing = results[1], results[3]
    assert isinstance(rejected, BackendError) and rejected.key == ("thin",)
    assert f"checkpoint {tiny_qwen2_5_vl}" in str(rejected) and "the processor rejects the image" in str(rejected)
    assert "thin.png" in str(rejected) and "aspect ratio" in str(rejected)
    assert isinstance(missing, BackendError) and "image file not found" in str(missing) and "missing.png" in str(missing)


def test_a_prompt_longer_than_the_context_fails_alone(tiny_qwen2_5_vl, images, tmp_path):
    short = tmp_path / "short-context"
    shutil.copytree(tiny_qwen2_5_vl, short)
    config = json.loads((short / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 120
    (short / "config.json").write_text(json.dumps(config))
    backend = TransformersBackend(short, batch_size=4)
    requests = requests_of(images)
    results = backend.generate(requests, GenerationParams(greedy=True, max_new_tokens=3))
    too_long = [r for r in results if isinstance(r, BackendError)]
    assert [e.key for e in too_long] == [("s3",)]
    assert "longer than the model's context of 120 tokens" in str(too_long[0]) and str(short) in str(too_long[0])
    assert sum(isinstance(r, BackendError) for r in results) == 1


def test_checkpoints_that_cannot_be_used_are_named(tiny_qwen2_5_vl, qwen_reference, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found: .*nowhere.*nothing is downloaded"):
        load_image_text_model(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="is not an image-text-to-text model: model_type 'qwen'.*--backend hf"):
        load_image_text_model(qwen_reference / "tiny-qwen-vl-chat")
    no_template = tmp_path / "no-template"
    shutil.copytree(tiny_qwen2_5_vl, no_template)
    (no_template / "chat_template.json").unlink()
    with pytest.raises(CheckpointError, match=f"checkpoint {no_template} has no chat template"):
        load_image_text_model(no_template)


def test_identity_and_digest_follow_what_the_model_sees(backend, images, tiny_qwen2_5_vl, tmp_path):
    assert backend.identity() == {"backend": "transformers", "model": str(tiny_qwen2_5_vl), "dtype": "torch.float32"}
    request = requests_of(images)[0]
    digest = backend.request_digest(request)
    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    same_bytes = ChatRequest.single(request.query[1]["text"], image=str(copy / "wide.png"), system=request.system)
    assert backend.request_digest(same_bytes) == digest  # the path is not part of the prompt here
    (copy / "other").mkdir()
    Image.new("RGB", (160, 90), (1, 2, 3)).save(copy / "other" / "wide.png")
    other_bytes = ChatRequest.single(request.query[1]["text"], image=str(copy / "other" / "wide.png"),
                                     system=request.system)
    assert backend.request_digest(other_bytes) != digest  # the image's content counts
    original = backend.processor.chat_template
    try:
        backend.processor.chat_template = original.replace("You are a helpful assistant.", "Hi.")
        backend.processor.chat_template = backend.processor.chat_template.replace("<|im_start|>", "<|im_start|> ")
        assert backend.request_digest(request) != digest  # an edited chat template redoes results
    finally:
        backend.processor.chat_template = original
