"""What the evaluation benchmarks share: the published In-Test samples as a workload, the reference PNGs standing in
for their images, and a stop rule that gives a random checkpoint realistic output lengths.

The stop rule. The tiny checkpoints are random: left alone they never write <|im_end|> and every output runs to
max_new_tokens, which flatters batching (no row finishes early) or, with a short limit, hides the decoding it is good
at. So a logits processor ends each output (<|im_end|>, then the checkpoint's stop-word rule adds <|endoftext|>, as a
real output ends) after a length drawn from the token lengths of published outputs (answers or reviews). The draw is a
function of the prompt's token ids only, so a prompt gets the same length alone or in any batch, and greedy outputs
stay comparable. Imported by the scripts beside it (run as `python bench/<script>.py`).
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MMROLE_SHARED", REPO.parent / "shared"))
PUBLISHED = SHARED / "mmrole_reference"
TINY_CHECKPOINT = SHARED / "qwen_vl_reference" / "tiny-qwen-vl-chat"
REFERENCE_IMAGES = ("portrait_200x300.png", "scene_300x200.png", "shapes_64x48.png")
FILES = ("comment_test.json", "human-role_test.json", "inter-role_test.json")


def published_review_lengths(tokenizer):
    """Token lengths of every published In-Test review (10,352: mean 54, median 55, p90 69, max 112)."""
    lengths = []
    for path in sorted((PUBLISHED / "in-test_reviews").glob("*/*.json")):
        for sample in json.loads(path.read_text(encoding="utf-8")):
            lengths += [len(tokenizer.encode(entry["review"])) for entry in (sample.get("rm_review") or {}).values()]
    return lengths


def published_answer_lengths(tokenizer):
    """Token lengths of every published In-Test answer, all models."""
    lengths = []
    for path in sorted((PUBLISHED / "in-test_answers").glob("*/*.json")):
        for sample in json.loads(path.read_text(encoding="utf-8")):
            turns = sample.get("conversations") or []
            if len(turns) > 1 and isinstance(turns[1].get("answer"), str):
                lengths.append(len(tokenizer.encode(turns[1]["answer"])))
    return lengths


def length_stop(lengths, pad_id, end_id):
    """Fresh logits processors for one generate call: one that forces end_id once a row has generated the length
    drawn for its prompt (the row's ids without left padding, hashed); none when lengths is None."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class PublishedLengthStop(LogitsProcessor):
        def __init__(self):
            self.prompt_width = None  # input width at the first step of this generate call
            self.targets = None

        def __call__(self, input_ids, scores):
            if self.prompt_width is None:
                self.prompt_width = input_ids.shape[1]
                self.targets = []
                for row in input_ids.tolist():
                    start = next(i for i, token in enumerate(row) if token != pad_id)
                    digest = hashlib.sha256(json.dumps(row[start:]).encode()).digest()
                    self.targets.append(lengths[int.from_bytes(digest[:8], "big") % len(lengths)])
            generated = input_ids.shape[1] - self.prompt_width
            for row, target in enumerate(self.targets):
                if generated == target:
                    scores[row] = -float("inf")
                    scores[row, end_id] = 0.0
            return scores

    return LogitsProcessorList([] if lengths is None else [PublishedLengthStop()])


def stopping_backend(stop):
    """The hf backend class with a stop rule: fresh processors for every request (`stop()`), which see that request's
    ids alone, as a one-at-a-time chat() call's do. stop None: the plain backend."""
    from mmrole.backends.hf import HFBackend

    if stop is None:
        return HFBackend

    class StoppingBackend(HFBackend):
        def generation_kwargs(self, params):
            return {**super().generation_kwargs(params), "make_logits_processor": stop}

    return StoppingBackend


def prepare_samples(samples_wanted, model, folder: Path, subfolder="answers"):
    """A test file per dialogue type in folder/subfolder (together `samples_wanted` published In-Test samples of
    `model`'s answers file, spread over each file; None: all) and folder/images (the reference PNGs, one per sample
    in turn). Returns the chosen records."""
    chosen = []
    (folder / subfolder).mkdir(parents=True)
    for number, name in enumerate(FILES):
        samples = json.loads((PUBLISHED / "in-test_answers" / model / name).read_text(encoding="utf-8"))
        if samples_wanted is not None:
            count = samples_wanted // len(FILES) + (number < samples_wanted % len(FILES))
            samples = samples[:: max(1, len(samples) // max(count, 1))][:count]
        (folder / subfolder / name).write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
        chosen += samples
    for i, sample in enumerate(chosen):
        target = folder / "images" / sample["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED / "qwen_vl_reference" / "images" / REFERENCE_IMAGES[i % 3], target)
    return chosen


def prefill_line(stats) -> str:
    """Prompt tokens computed against the naive count (every prompt prefilled whole, as one-at-a-time chat() does)."""
    computed, naive = stats.get("prefill_tokens", 0), stats.get("prompt_tokens", 0)
    return (f"prefill tokens computed {computed:,} of {naive:,} naive ({naive / max(computed, 1):.1f}x fewer; "
            f"{stats.get('reused_tokens', 0):,} copied from shared prefixes, {stats.get('padding_tokens', 0):,} "
            f"padding, {stats.get('prefill_forwards', 0)} prefill forwards)")


def print_comparison(loop_label: str, unit: str, loop_seconds: float, loop_outputs, batched) -> int:
    """Print the loop's rate, then each batch size's rate, speed-up and whether every output equals the loop's
    (batched: {batch_size: (seconds, outputs, ...)}, outputs keyed alike). Returns 1 when any output differs."""
    n, status = len(loop_outputs), 0
    print(f"{loop_label + ':':<46}{loop_seconds:8.1f} s  {n / loop_seconds:7.3f} {unit}/s")
    for batch_size, (seconds, outputs, *_) in batched.items():
        differing = [key for key in loop_outputs if outputs.get(key) != loop_outputs[key]]
        same = f"same {n}/{n} greedy {unit}" if not differing and len(outputs) == n else (
            f"MISMATCH: {len(differing)} {unit} differ, e.g. {differing[:3]}")
        status = status or (1 if differing or len(outputs) != n else 0)
        print(f"{f'batched, batch {batch_size:3d}:':<46}{seconds:8.1f} s  {n / seconds:7.3f} {unit}/s  "
              f"speed-up {loop_seconds / seconds:.2f}x  ({same})")
    print(f"load average after the run: {os.getloadavg()[0]:.1f} (other processes share the 2 cores)")
    return status

