"""Reviews per second: our batched RM review vs the original loop, side by side, one run.

The original RM_review.py asks `model.chat` once per sample and metric (8 calls per sample, batch 1).
Ours (mmrole.eval.review with the hf backend) decodes up to --batch_size prompts together with
continuous batching (a review that ends leaves the batch and the next prompt takes its place), each
image encoded once per sample, the prompts that join at one step prefilled together, and the prefix a
sample's eight prompts share (all but the aspect sentence near their end) computed once and copied.
Each batched run also prints the prompt tokens it computed against the naive count (every prompt
prefilled whole, as the loop does). Both run greedy on the same tiny checkpoint;
the script checks that every review is identical, then prints both rates and their ratio. A
benchmark, not a test (timings depend on the machine and its load).

    python bench/rm_review_throughput.py [--samples 12] [--batch_size 8 16 32] [--max_new_tokens 512]

Realistic review lengths. The tiny checkpoint is random: left alone it never writes <|im_end|>
and every review runs to max_new_tokens, which flatters batching (no row finishes early) or, with
a short limit, hides the decoding it is good at. So both sides get the same stopping rule, a logits
processor that ends each review (<|im_end|>, then the checkpoint's stop-word rule adds
<|endoftext|>, as a real review ends) after a length drawn from the token lengths of the published
reviews (10,352 In-Test reviews: mean 54, median 55, p90 69, max 112 tokens). The draw is a function
of the prompt's token ids only, so a prompt gets the same length alone or in any batch and greedy
outputs stay equal. With varied lengths a static batch would run until its longest review ends;
continuous batching refills the rows, which the decoding-step count printed per run shows.
Samples come from all three dialogue types (prompts of ~1,000 to ~2,600 tokens with the image);
a batch never spans two answers files (the review works file by file), so 12 samples give 32
requests per file. Each --batch_size is one batched run, all compared with one run of the loop.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/workload.py, also when a test loads this file
from workload import (  # noqa: E402
    TINY_CHECKPOINT, length_stop, prefill_line, prepare_samples, print_comparison, published_review_lengths,
    stopping_backend)


def original_loop(model, tokenizer, samples, image_dir, max_new_tokens, stop):
    """The original's procedure: one chat() per sample and metric."""
    from mmrole.common.metrics import METRIC_NAMES
    from mmrole.eval.review import NORMAL, review_request
    from mmrole.eval.files import parse_sample

    reviews = {}
    for record in samples:
        sample = parse_sample(record, need_answer=True)
        for metric in METRIC_NAMES:
            request = review_request(sample, metric, NORMAL, image_dir)
            query = tokenizer.from_list_format(list(request.query))
            reviews[(sample.id, metric)], _ = model.chat(tokenizer, query=query, history=None, system=request.system,
                                                         max_new_tokens=max_new_tokens,
                                                         logits_processor=stop())
    return reviews


def batched_review(model, tokenizer, workdir, batch_size, max_new_tokens, stop, output="reviews"):
    """Ours: the full review pipeline (journal, output file) with the batched hf backend."""
    from mmrole.backends.base import GenerationParams
    from mmrole.eval.files import input_files
    from mmrole.eval.review import ReviewConfig, review_files

    config = ReviewConfig(image_dir=str(workdir / "images"), params=GenerationParams(greedy=True, max_new_tokens=max_new_tokens),
                          progress=False)
    backend = stopping_backend(stop)(model=model, tokenizer=tokenizer, batch_size=batch_size)
    review_files(input_files(workdir / "answers", None), workdir / output, backend, config)
    reviews = {}
    for path in (workdir / output).glob("*.json"):
        for record in json.loads(path.read_text(encoding="utf-8")):
            for metric, entry in record.get("rm_review", {}).items():
                reviews[(record["id"], metric)] = entry["review"]
    return reviews, backend.stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model_path", default=str(TINY_CHECKPOINT))
    parser.add_argument("--model", default="mmrole-agent", help="whose published answers to review")
    parser.add_argument("--samples", type=int, default=12, help="spread over the three dialogue types")
    parser.add_argument("--batch_size", type=int, nargs="+", default=[8, 16, 32], help="one batched run per value")
    parser.add_argument("--max_new_tokens", type=int, default=512, help="the checkpoint's default (a limit only)")
    parser.add_argument("--fixed_length", action="store_true",
                        help="no stop rule: every review runs to --max_new_tokens (the old, flattering setting)")
    args = parser.parse_args(argv)

    import torch
    from mmrole.qwen_vl.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model_path, device="cpu")
    model.generation_config.do_sample = False
    lengths = None if args.fixed_length else published_review_lengths(tokenizer)
    stop = lambda: length_stop(lengths, model.generation_config.pad_token_id, tokenizer.im_end_id)  # noqa: E731
    batched = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        samples = prepare_samples(args.samples, args.model, workdir)
        n = len(samples) * 8
        rule = ("fixed length" if lengths is None else
                f"stop at published review lengths (mean {statistics.mean(lengths):.0f}, max {max(lengths)})")
        print(f"{len(samples)} samples x 8 metrics = {n} reviews; {rule}; max_new_tokens {args.max_new_tokens}; "
              f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}", flush=True)
        with torch.inference_mode():
            model.chat(tokenizer, query="warm-up", history=None, max_new_tokens=2)
            for batch_size in args.batch_size:
                start = time.perf_counter()
                reviews, stats = batched_review(model, tokenizer, workdir, batch_size, args.max_new_tokens, stop,
                                                output=f"reviews_{batch_size}")
                batched[batch_size] = (time.perf_counter() - start, reviews, stats)
                print(f"  batch {batch_size}: {batched[batch_size][0]:.1f} s, {stats['decoding_steps']} decoding "
                      f"steps; {prefill_line(stats)}", flush=True)
            start = time.perf_counter()
            theirs = original_loop(model, tokenizer, samples, str(workdir / "images"), args.max_new_tokens, stop)
            theirs_s = time.perf_counter() - start
    return print_comparison("original loop (8 chat() per sample, batch 1)", "reviews", theirs_s, theirs, batched)


if __name__ == "__main__":
    sys.exit(main())
