"""Answers per second: our batched inference vs the original one-at-a-time loop, side by side, one run.

The original inference.py asks `model.chat` once per test sample (batch 1). Ours (mmrole.eval.answer with the hf
backend, --no_random) decodes up to --batch_size prompts together with continuous batching: an answer that ends
leaves the batch and the next prompt takes its place, the prompts that join at one step are prefilled together, and
a prefix another row holds (the role-play system prompt and the framing before the character's profile) is copied,
not computed. Both run greedy on the same tiny checkpoint; the script checks that every answer is identical, then
prints both rates, their ratio, and the prompt tokens the batched run computed against the naive count.

    python bench/inference_throughput.py [--samples 48] [--batch_size 8] [--max_new_tokens 512]

Realistic answer lengths: the random checkpoint never ends an answer by itself, so both sides end each answer after
a length drawn from the token lengths of the published In-Test answers (all models), a function of the prompt's ids
(bench/workload.py). Samples are published In-Test samples of all three dialogue types, their images the reference
PNGs. A benchmark, not a test (timings depend on the machine and its load): the load average is printed.
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
    TINY_CHECKPOINT, length_stop, prefill_line, prepare_samples, print_comparison, published_answer_lengths,
    stopping_backend)


def original_loop(model, tokenizer, samples, image_dir, max_new_tokens, stop):
    """The original's procedure: one chat() per test sample."""
    from mmrole.eval.answer import answer_request
    from mmrole.eval.files import parse_sample

    answers = {}
    for record in samples:
        request = answer_request(parse_sample(record, need_answer=False), image_dir)
        query = tokenizer.from_list_format(list(request.query))
        answers[record["id"]], _ = model.chat(tokenizer, query=query, history=None, system=request.system,
                                              max_new_tokens=max_new_tokens, logits_processor=stop())
    return answers


def batched_inference(model, tokenizer, workdir: Path, batch_size, max_new_tokens, stop, output):
    """Ours: the full inference pipeline (journal, output files) with the batched hf backend."""
    from mmrole.backends.base import GenerationParams
    from mmrole.eval.answer import answer_files
    from mmrole.eval.files import input_files

    backend = stopping_backend(stop)(model=model, tokenizer=tokenizer, batch_size=batch_size)
    params = GenerationParams(greedy=True, max_new_tokens=max_new_tokens)
    answer_files(input_files(workdir / "tests", None), workdir / output, backend, params, workdir / "images",
                 progress=False)
    answers = {}
    for path in (workdir / output).glob("*.json"):
        for record in json.loads(path.read_text(encoding="utf-8")):
            answers[record["id"]] = record["conversations"][1].get("answer")
    return answers, backend.stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model_path", default=str(TINY_CHECKPOINT), help="a Qwen-VL-Chat-format checkpoint")
    parser.add_argument("--model", default="mmrole-agent", help="whose published answers file supplies the samples")
    # 48 by default: with 24, one answer at the 512-token limit sets the batched run's length (550 of its steps are
    # >= 512), so the figure measured that answer more than the batching (a real test file holds 72 samples).
    parser.add_argument("--samples", type=int, default=48, help="spread over the three dialogue types (default 48)")
    parser.add_argument("--batch_size", type=int, nargs="+", default=[8], help="one batched run per value")
    parser.add_argument("--max_new_tokens", type=int, default=512, help="the checkpoint's default (a limit only)")
    args = parser.parse_args(argv)
    if args.samples < 1 or min(args.batch_size) < 1:
        parser.error("--samples and --batch_size must be at least 1")

    import torch
    from mmrole.qwen_vl.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model_path, device="cpu")
    model.generation_config.do_sample = False
    lengths = published_answer_lengths(tokenizer)
    stop = lambda: length_stop(lengths, model.generation_config.pad_token_id, tokenizer.im_end_id)  # noqa: E731
    batched = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        samples = prepare_samples(args.samples, args.model, workdir, subfolder="tests")
        n = len(samples)
        print(f"{n} answers; stop at published answer lengths (mean {statistics.mean(lengths):.0f}, median "
              f"{statistics.median(lengths):.0f}, max {max(lengths)}); max_new_tokens {args.max_new_tokens}; "
              f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}", flush=True)
        with torch.inference_mode():
            model.chat(tokenizer, query="warm-up", history=None, max_new_tokens=2)
            for batch_size in args.batch_size:
                start = time.perf_counter()
                answers, stats = batched_inference(model, tokenizer, workdir, batch_size, args.max_new_tokens, stop,
                                                   output=f"answers_{batch_size}")
                batched[batch_size] = (time.perf_counter() - start, answers)
                print(f"  batch {batch_size}: {batched[batch_size][0]:.1f} s, {stats.get('decoding_steps', 0)} "
                      f"decoding steps; {prefill_line(stats)}", flush=True)
            start = time.perf_counter()
            theirs = original_loop(model, tokenizer, samples, str(workdir / "images"), args.max_new_tokens, stop)
            theirs_s = time.perf_counter() - start
    return print_comparison("original loop (one chat() per sample)", "answers", theirs_s, theirs, batched)


if __name__ == "__main__":
    sys.exit(main())
