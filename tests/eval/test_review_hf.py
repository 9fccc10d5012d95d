"""RM_review.py with the hf backend on the tiny reference checkpoint.

Expected reviews: the original RM_review procedure, one request at a time, run with this project's own Qwen-VL
`chat` (not the original code; its equality with the original code's outputs is tested in tests/qwen_vl/):
`model.generation_config.do_sample = False`, then for each sample and each metric
`model.chat(tokenizer, query=from_list_format([{'image': os.path.join(image_dir, image)},
{'text': judge prompt}]), history=None, system=<evaluator system>)`, parsed as the original did.
The checkpoint copy's generation_config.json says max_new_tokens 16 (see tests/eval/test_answer_hf.py).
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from mmrole.common.metrics import METRIC_NAMES, parse_score_pair
from mmrole.common.prompts import EVALUATOR_SYSTEM, judge_prompt

from tests.support.checkpoints import REFERENCE_IMAGES, tiny_checkpoint

from tests.support.scripts import load_script

RM_review = load_script("eval/RM_review.py")

MODEL, NAME, PICKS = "yi-vl-6b", "human-role_test.json", (3, 40)


@pytest.fixture(scope="module")
def setup(mmrole_reference, qwen_reference, tmp_path_factory):
    from mmrole.qwen_vl.loading import load_model_and_tokenizer

    root = tmp_path_factory.mktemp("rm_review_hf")
    checkpoint = tiny_checkpoint(qwen_reference, root / "ckpt")
    answers = json.loads((mmrole_reference / "in-test_answers" / MODEL / NAME).read_text(encoding="utf-8"))
    samples = [answers[i] for i in PICKS]
    (root / "answers").mkdir()
    (root / "answers" / NAME).write_text(json.dumps(samples, ensure_ascii=False, indent=4), encoding="utf-8")
    image_dir = root / "images"
    for i, sample in enumerate(samples):
        (image_dir / sample["image"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(qwen_reference / "images" / REFERENCE_IMAGES[i % 3], image_dir / sample["image"])
    model, tokenizer = load_model_and_tokenizer(checkpoint, device="cpu")
    model.generation_config.do_sample = False
    expected = []
    for sample in samples:
        turn = sample["conversations"][1]
        reviews = {}
        for metric in METRIC_NAMES:
            text = judge_prompt(question=sample["conversations"][0]["value"], answer_a=turn["answer"],
                                answer_b=turn["value"], role=sample["role"], script=sample["script"],
                                other_role=sample["other_role"], metric=metric)
            query = tokenizer.from_list_format([{"image": os.path.join(str(image_dir), sample["image"])}, {"text": text}])
            review, _ = model.chat(tokenizer, query=query, history=None, system=EVALUATOR_SYSTEM)
            pair = parse_score_pair(review)
            reviews[metric] = {"review": review, "score": list(pair) if pair else {}}
        expected.append(dict(sample, rm_review=reviews))
    return dict(root=root, checkpoint=checkpoint, image_dir=image_dir, samples=samples, expected=expected,
                model=model, tokenizer=tokenizer)


@pytest.mark.parametrize("batch_size", [16, 5])
def test_batched_no_random_reviews_equal_this_projects_one_at_a_time_chat(setup, capsys, batch_size):
    """16 requests (2 samples x 8 metrics, prompts of ~1,200 and ~2,100 tokens) in 16 rows, or in 5 rows
    that are refilled as reviews end (a sample's requests spread over refills)."""
    out = setup["root"] / f"reviews_{batch_size}"
    assert RM_review.main(["--model_path", str(setup["checkpoint"]), "--image_dir", str(setup["image_dir"]),
                           "--input_dir", str(setup["root"] / "answers"), "--output_dir", str(out),
                           "--no_random", "--batch_size", str(batch_size), "--no_progress"]) == 3  # reviews unparsed
    reviews = json.loads((out / NAME).read_text(encoding="utf-8"))
    assert reviews == setup["expected"]
    assert all(r["review"] for s in reviews for r in s["rm_review"].values())
    # A random model writes no "[Scores]:": every review is a reported parse failure, never a score.
    err = capsys.readouterr().err
    assert err.count("no score pair in the review after 1 ask(s)") == 16


@pytest.mark.parametrize("greedy", [True, False])
def test_each_image_is_encoded_once_per_sample_also_with_swap(setup, greedy):
    """--swap: 16 requests per sample, 24 rows. Greedy: continuous batching, 8 requests of the second
    sample join the first sample's 16 and the rest refill rows; the consecutive requests showing one image
    share its encoding, and the prompt prefix they share is prefilled once (backend.stats). Sampling: static batches; cutting every 24 requests would put the second sample's
    image in two batches; batches end at sample boundaries instead."""
    from mmrole.backends.base import GenerationParams
    from mmrole.backends.hf import HFBackend
    from mmrole.eval.files import input_files
    from mmrole.eval.review import ReviewConfig, review_files

    encoded, static_batches, decoding_rows = [], [], []

    reviewed = []

    class CountingBackend(HFBackend):
        def generate_iter(self, requests, params):
            reviewed.extend(requests)
            return super().generate_iter(requests, params)

        def _answer(self, chunk, kwargs):
            static_batches.append(len(chunk))
            return super()._answer(chunk, kwargs)

    model = setup["model"]
    hooks = [model.transformer.visual.register_forward_hook(lambda m, args, out: encoded.append(len(args[0]))),
             model.transformer.register_forward_pre_hook(
                 lambda m, args, kwargs: decoding_rows.append(len(kwargs["input_ids"]))
                 if kwargs.get("input_ids") is not None and kwargs["input_ids"].shape[1] == 1 else None,
                 with_kwargs=True)]
    try:
        backend = CountingBackend(model=model, tokenizer=setup["tokenizer"], batch_size=24)
        params = GenerationParams(greedy=greedy, max_new_tokens=3, seed=None if greedy else 5)
        config = ReviewConfig(image_dir=str(setup["image_dir"]), params=params, swap=True, progress=False)
        review_files(input_files(setup["root"] / "answers", None), setup["root"] / f"once_{greedy}", backend, config)
    finally:
        for hook in hooks:
            hook.remove()
    if greedy:
        assert static_batches == [] and decoding_rows and max(decoding_rows) == 24
        # A sample's 16 prompts differ only from the aspect sentence on: most of their prefill is copied.
        stats = backend.stats
        assert stats["prompt_tokens"] > sum(backend.prompt_length(r) for r in reviewed) > 0  # + chat framing
        assert stats["prefill_tokens"] + stats["reused_tokens"] == stats["prompt_tokens"]
        assert stats["prefill_tokens"] < 0.25 * stats["prompt_tokens"], stats
    else:
        assert static_batches == [16, 16]
    # Two samples: each image encoded once (greedy: both in one vision forward, when the second sample's rows join
    # with the first's).
    assert encoded == ([2] if greedy else [1, 1])


def _image_runs(sizes):
    from mmrole.backends.base import ChatRequest

    return [ChatRequest.single("t", image=f"img{run}.png", system="s") for run, size in enumerate(sizes)
            for _ in range(size)]


@pytest.mark.parametrize("runs, batch_size, batches", [
    ([8, 8, 8, 8], 12, [8, 8, 8, 8]),  # never 12 + 4: a sample stays in one batch
    ([8, 8, 8, 8], 16, [16, 16]),
    ([16, 16], 24, [16, 16]),  # --swap
    ([16, 16, 8], 12, [12, 4, 12, 12]),  # a run larger than the batch fills whole batches; 4 + 8 share one
    ([3, 1, 2, 5, 8], 8, [6, 5, 8]),  # parse-retry rounds: what is left of each sample
    ([1] * 5, 2, [2, 2, 1]),  # inference: one request per image
])
def test_batches_end_at_runs_of_the_same_image(runs, batch_size, batches):
    from mmrole.backends.hf import batches_of_whole_runs

    requests = _image_runs(runs)
    result = batches_of_whole_runs(requests, batch_size)
    assert [len(b) for b in result] == batches
    assert [i for b in result for i in b] == list(range(len(requests)))  # every request once, in order


def test_parse_retries_sample_again_and_resume_after_a_kill(setup):
    from mmrole.backends.base import GenerationParams
    from mmrole.backends.hf import HFBackend
    from mmrole.eval.files import input_files
    from mmrole.eval.review import ReviewConfig, review_files

    class DyingBackend(HFBackend):
        """Killed when it is about to hand out a result beyond `results_left`."""

        results_left = None

        def generate_iter(self, requests, params):
            for item in super().generate_iter(requests, params):
                if self.results_left == 0:
                    raise KeyboardInterrupt("simulated kill")
                self.results_left -= 1
                yield item

    inputs = input_files(setup["root"] / "answers", None)
    config = ReviewConfig(image_dir=str(setup["image_dir"]), params=GenerationParams(greedy=True, max_new_tokens=6),
                          parse_retries=1, progress=False)
    full = setup["root"] / "full"
    [summary] = review_files(inputs, full, HFBackend(model=setup["model"], tokenizer=setup["tokenizer"], batch_size=16),
                             config)
    journal = [json.loads(line) for line in (full / f"{Path(NAME).stem}.journal.jsonl").read_text().splitlines()]
    assert len(journal) == 32 and all(r["attempts"] == 2 for r in journal[16:])  # each asked twice
    assert len(summary.failed) == 16 and all("after 2 ask(s)" in p.message for p in summary.failed)

    resumed = setup["root"] / "resumed"
    dying = DyingBackend(model=setup["model"], tokenizer=setup["tokenizer"], batch_size=4)
    dying.results_left = 12  # killed in the greedy first round
    with pytest.raises(KeyboardInterrupt):
        review_files(inputs, resumed, dying, config)
    review_files(inputs, resumed, HFBackend(model=setup["model"], tokenizer=setup["tokenizer"], batch_size=16), config)
    # Greedy first asks are batch-independent; the sampled retry round is one batch of 16 with the
    # same seed in both runs, so even the retries agree.
    assert (resumed / NAME).read_bytes() == (full / NAME).read_bytes()


def test_with_prompt_lengths_runs_go_longest_first_and_stay_whole():
    from mmrole.backends.hf import batches_of_whole_runs

    requests = _image_runs([2, 2, 2, 2])
    lengths = [100, 101, 900, 905, 300, 300, 880, 870]
    assert batches_of_whole_runs(requests, 4, lengths) == [[2, 3, 6, 7], [4, 5, 0, 1]]
