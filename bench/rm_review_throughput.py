"""Reviews per second: our batched RM review vs the original loop, side by side, one run.

The original RM_review.py asks `model.chat` once per sample and metric (8 calls per sample, batch 1).
Ours (mmrole.review with the hf backend) sends the 8 metric prompts of several samples in one
left-padded batch, each image encoded once per sample. Both run greedy on the same tiny checkpoint
with the same max_new_tokens; the script checks that every review is identical, then prints both
rates and their ratio. A benchmark, not a test (timings depend on the machine).

    python bench/rm_review_throughput.py [--samples 4] [--batch_size 32] [--max_new_tokens 128]

The random tiny model never stops early, so both sides generate exactly --max_new_tokens per
review. The default 128 is about the longest published review (MMRole-Eval_RM reviews: 51 tokens
on average, 67 at the 90th percentile, 109 at most): a batch of real reviews runs until its
longest row ends. Batching pays off in decoding; a prefill-only run (--max_new_tokens 1) is
slower batched (padding), so the ratio grows with the number of generated tokens.
"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MMROLE_SHARED", REPO.parent / "shared"))
REFERENCE_IMAGES = ("portrait_200x300.png", "scene_300x200.png", "shapes_64x48.png")


def prepare(args, workdir: Path):
    """An answers file of --samples published samples and an image folder (the reference PNGs)."""
    answers_path = SHARED / "mmrole_reference" / "in-test_answers" / args.model / args.file
    samples = json.loads(answers_path.read_text(encoding="utf-8"))[: args.samples]
    (workdir / "answers").mkdir()
    (workdir / "answers" / args.file).write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    for i, sample in enumerate(samples):
        target = workdir / "images" / sample["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED / "qwen_vl_reference" / "images" / REFERENCE_IMAGES[i % 3], target)
    return samples


def original_loop(model, tokenizer, samples, image_dir, max_new_tokens):
    """The original's procedure: one chat() per sample and metric."""
    from mmrole.metrics import METRIC_NAMES
    from mmrole.schema import parse_sample
    from mmrole.review import NORMAL, review_request

    reviews = {}
    for record in samples:
        sample = parse_sample(record, need_answer=True)
        for metric in METRIC_NAMES:
            request = review_request(sample, metric, NORMAL, image_dir)
            query = tokenizer.from_list_format(list(request.query))
            reviews[(sample.id, metric)], _ = model.chat(tokenizer, query=query, history=None, system=request.system,
                                                         max_new_tokens=max_new_tokens)
    return reviews


def batched_review(model, tokenizer, workdir, batch_size, max_new_tokens):
    """Ours: the full review pipeline (journal, output file) with the batched hf backend."""
    from mmrole.backends.base import GenerationParams
    from mmrole.backends.hf import HFBackend
    from mmrole.results import input_files
    from mmrole.review import ReviewConfig, review_files

    config = ReviewConfig(image_dir=str(workdir / "images"), params=GenerationParams(greedy=True, max_new_tokens=max_new_tokens),
                          progress=False)
    backend = HFBackend(model=model, tokenizer=tokenizer, batch_size=batch_size)
    review_files(input_files(workdir / "answers", None), workdir / "reviews", backend, config)
    reviews = {}
    for path in (workdir / "reviews").glob("*.json"):
        for record in json.loads(path.read_text(encoding="utf-8")):
            for metric, entry in record.get("rm_review", {}).items():
                reviews[(record["id"], metric)] = entry["review"]
    return reviews


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default=str(SHARED / "qwen_vl_reference" / "tiny-qwen-vl-chat"))
    parser.add_argument("--model", default="mmrole-agent", help="whose published answers to review")
    parser.add_argument("--file", default="comment_test.json")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    args = parser.parse_args(argv)

    import torch
    from mmrole.qwen_vl.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model_path, device="cpu")
    model.generation_config.do_sample = False
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        samples = prepare(args, workdir)
        n = len(samples) * 8
        print(f"{len(samples)} samples x 8 metrics = {n} reviews, max_new_tokens {args.max_new_tokens}, "
              f"torch threads {torch.get_num_threads()}")
        start = time.perf_counter()
        with torch.inference_mode():
            ours = batched_review(model, tokenizer, workdir, args.batch_size, args.max_new_tokens)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            theirs = original_loop(model, tokenizer, samples, str(workdir / "images"), args.max_new_tokens)
        theirs_s = time.perf_counter() - start
    if ours != theirs:
        differing = [key for key in theirs if ours.get(key) != theirs[key]]
        print(f"MISMATCH: {len(differing)} reviews differ, e.g. {differing[:3]}")
        return 1
    print(f"same greedy reviews: {n}/{n}")
    print(f"original loop (8 chat() per sample, batch 1): {theirs_s:8.2f} s  {n / theirs_s:7.3f} reviews/s")
    print(f"batched review (batch {args.batch_size}):            {ours_s:8.2f} s  {n / ours_s:7.3f} reviews/s")
    print(f"speed-up: {theirs_s / ours_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
