"""inference.py with the hf backend on the tiny reference checkpoint.

The expected answers come from the original script's one-at-a-time procedure run with this project's own
Qwen-VL `chat` (its equality with the original code's outputs is tested in tests/qwen_vl/), not with the original
code: `model.generation_config.do_sample = False`, then per sample alone
`model.chat(tokenizer, query=tokenizer.from_list_format([{'image': os.path.join(image_dir, image)},
{'text': prompt}]), history=None, system=<role-play system>)` with every other setting from the
checkpoint's generation_config.json. The checkpoint copy used here has max_new_tokens 16 in its
generation_config.json (the released 512 would only make the test slow): the batched backend must
pick that default up by itself.
"""

import json
import os
import shutil

import pytest

from mmrole.common.prompts import ROLEPLAY_SYSTEM
from tests.support.checkpoints import REFERENCE_IMAGES, tiny_checkpoint

from tests.support.scripts import load_script

inference = load_script("inference.py")

def make_test_file(mmrole_reference, qwen_reference, folder, model="mmrole-agent", name="comment_test.json", picks=(0, 5, 9)):
    """A small test file from published samples (answers stripped) with images from the reference
    folder; one prompt is cut short so the batch spans several dynamic-NTK factors (short and long rows)."""
    published = json.loads((mmrole_reference / "in-test_answers" / model / name).read_text(encoding="utf-8"))
    samples = [json.loads(json.dumps(published[i])) for i in picks]
    for sample in samples:
        sample["conversations"][1].pop("answer", None)
    samples[0]["conversations"][0]["value"] = samples[0]["conversations"][0]["value"][:1]
    (folder / "test").mkdir(parents=True)
    (folder / "test" / name).write_text(json.dumps(samples, ensure_ascii=False, indent=4), encoding="utf-8")
    for i, sample in enumerate(samples):
        target = folder / "images" / sample["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(qwen_reference / "images" / REFERENCE_IMAGES[i % 3], target)
    return folder / "test", folder / "images", samples


@pytest.fixture(scope="module")
def setup(mmrole_reference, qwen_reference, tmp_path_factory):
    from mmrole.qwen_vl.chat_format import make_context
    from mmrole.qwen_vl.loading import load_model_and_tokenizer

    root = tmp_path_factory.mktemp("inference_hf")
    checkpoint = tiny_checkpoint(qwen_reference, root / "ckpt")
    test_dir, image_dir, samples = make_test_file(mmrole_reference, qwen_reference, root)
    model, tokenizer = load_model_and_tokenizer(checkpoint, device="cpu")
    model.generation_config.do_sample = False  # what the original's --no_random does
    expected, lengths = {}, []
    for sample in samples:
        query = tokenizer.from_list_format([{"image": os.path.join(str(image_dir), sample["image"])},
                                            {"text": sample["conversations"][0]["value"]}])
        expected[sample["id"]], _ = model.chat(tokenizer, query=query, history=None, system=ROLEPLAY_SYSTEM)
        lengths.append(len(make_context(tokenizer, query, history=[], system=ROLEPLAY_SYSTEM)[1]))
    return dict(root=root, checkpoint=checkpoint, test_dir=test_dir, image_dir=image_dir, samples=samples,
                expected=expected, lengths=lengths, model=model, tokenizer=tokenizer)


def _run(setup, out, *extra):
    return _run_with(setup, setup["checkpoint"], out, *extra)


def _answers(path):
    return {s["id"]: s["conversations"][1]["answer"] for s in json.loads(path.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("batch_size", [3, 2])
def test_batched_no_random_answers_equal_this_projects_one_at_a_time_chat(setup, capsys, batch_size):
    # Prompt rows on both sides of the tiny model's seq_length (300) and of an NTK step (600); with 2 rows
    # the third request joins when a row is free.
    assert min(setup["lengths"]) < 300 and max(setup["lengths"]) > 600, setup["lengths"]
    out = setup["root"] / f"batched_{batch_size}"
    assert _run(setup, out, "--no_random", "--batch_size", str(batch_size)) == 0
    answers = _answers(out / "comment_test.json")
    assert answers == setup["expected"]
    assert all(answers.values())
    # The checkpoint's max_new_tokens (16, not 512) applied: random weights loop until that limit.
    assert "3 answer(s) stopped at max_new_tokens" in capsys.readouterr().err


def test_flag_overrides_the_checkpoint_default(setup):
    from mmrole.backends.hf import HFBackend
    from mmrole.backends.base import GenerationParams
    from mmrole.eval.answer import answer_request
    from mmrole.eval.files import parse_sample

    backend = HFBackend(model=setup["model"], tokenizer=setup["tokenizer"], batch_size=2)
    assert backend.generation_kwargs(GenerationParams(greedy=True)) == {"do_sample": False}  # nothing else forced
    requests = [answer_request(parse_sample(s, need_ground_truth=False), setup["image_dir"]) for s in setup["samples"][:2]]
    results = backend.generate(requests, GenerationParams(greedy=True, max_new_tokens=4))
    assert [r.completion_tokens for r in results] == [4, 4] and all(r.finish_reason == "length" for r in results)
    # The query holds the image path as the original built it: the path string is part of the prompt.
    query, history = backend.render(requests[0])
    image = os.path.join(str(setup["image_dir"]), setup["samples"][0]["image"])
    assert query == f"Picture 1: <img>{image}</img>\n" + setup["samples"][0]["conversations"][0]["value"]
    assert history == []


def test_kill_and_resume_gives_the_uninterrupted_answers(setup):
    """A kill after the first answer; the rerun batches differently and still gives the same file."""
    from mmrole.backends.base import GenerationParams
    from mmrole.backends.hf import HFBackend
    from mmrole.eval.answer import answer_files

    class DyingBackend(HFBackend):
        """Killed when it is about to hand out its second result."""

        def generate_iter(self, requests, params):
            for results, item in enumerate(super().generate_iter(requests, params)):
                if results == 1:
                    raise KeyboardInterrupt("simulated kill")
                yield item

    out = setup["root"] / "resumed"
    inputs = [setup["test_dir"] / "comment_test.json"]
    params = GenerationParams(greedy=True)
    dying = DyingBackend(model=setup["model"], tokenizer=setup["tokenizer"], batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        answer_files(inputs, out, dying, params, setup["image_dir"], progress=False)
    assert len((out / "comment_test.journal.jsonl").read_text().splitlines()) == 1
    assert not (out / "comment_test.json").exists()
    backend = HFBackend(model=setup["model"], tokenizer=setup["tokenizer"], batch_size=2)
    [summary] = answer_files(inputs, out, backend, params, setup["image_dir"], progress=False)
    assert summary.done == 3
    assert _answers(out / "comment_test.json") == setup["expected"]


def test_lora_adapter_answers_as_the_original_peft_procedure(setup):
    """--use_lora loads an adapter on its base model; answers equal the original procedure's (peft model + this
    project's chat, one sample at a time)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from mmrole.qwen_vl.loading import load_model_and_tokenizer

    adapter = setup["root"] / "lora"
    base, tokenizer = load_model_and_tokenizer(setup["checkpoint"], device="cpu")
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "w2"], init_lora_weights=False))
    lora.save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(setup["checkpoint"])
    (adapter / "adapter_config.json").write_text(json.dumps(config))

    reference_base, _ = load_model_and_tokenizer(setup["checkpoint"], device="cpu")
    reference = PeftModel.from_pretrained(reference_base, adapter).eval()
    reference.generation_config.do_sample = False
    sample = setup["samples"][1]
    query = tokenizer.from_list_format([{"image": os.path.join(str(setup["image_dir"]), sample["image"])},
                                        {"text": sample["conversations"][0]["value"]}])
    expected, _ = reference.chat(tokenizer, query=query, history=None, system=ROLEPLAY_SYSTEM)
    assert expected != setup["expected"][sample["id"]]  # the adapter changes the answer

    out = setup["root"] / "lora_out"
    assert _run_with(setup, adapter, out, "--use_lora", "--no_random", "--input_file", "comment_test.json") == 0
    assert _answers(out / "comment_test.json")[sample["id"]] == expected


def _run_with(setup, model_path, out, *extra):
    return inference.main(["--backend", "hf", "--model_path", str(model_path), "--image_dir", str(setup["image_dir"]),
                           "--input_dir", str(setup["test_dir"]), "--output_dir", str(out), "--no_progress", *extra])
