"""One model's whole MMRole-Eval on one checkpoint and device: its answers to the test samples, then the reward
model's reviews of them (8 per sample), timed, with the share of time spent in prefill and in decoding.

    python bench/full_eval.py --model_path CKPT [--judge_path RM_CKPT] [--device cuda --dtype bfloat16]
        [--test_dir DIR --image_dir DIR] [--batch_size 8] [--output_dir DIR] [--samples N] [--published_lengths]

This is the command that measures the real figure: on a GPU with the real 9.6B checkpoints (the evaluated model, and
the MMRole-Eval reward model as --judge_path), over the 294 test samples (--test_dir: the test files, --image_dir:
their images), it runs exactly what eval/inference + eval/RM_review.py --no_random run (the same pipeline and
engine, greedy, continuous batching, shared prefixes prefilled once) and prints per stage: wall time, outputs/s,
generated and prompt tokens/s, the prompt tokens computed against the naive count, and the time inside the language
model's prefill forwards, its decoding forwards, the vocabulary projection and the vision encoder (the rest:
logits processors, scheduling, tokenizing, files). With --output_dir the outputs stay there and a rerun resumes (the
pipeline's journals); a rerun of finished stages is timed as nearly nothing.

Without --test_dir it takes the published In-Test samples (216 of the 294: the Out-Test inputs are not in ../shared)
with the reference PNGs as their images; --samples N keeps N of them. The tiny random checkpoints never end an output
by themselves: --published_lengths ends each answer / review after a length drawn from the published ones
(bench/workload.py), as a real model's would, so that a CPU run (minutes, with the tiny checkpoint) has a realistic
mix of prefill and decoding. Exit status 0 when every answer and review was generated (a random judge's reviews hold
no scores: they are counted, not failures), 3 when some were not.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/workload.py, also when a test loads this file
from workload import (  # noqa: E402
    TINY_CHECKPOINT, length_stop, prefill_line, prepare_samples, published_answer_lengths, published_review_lengths,
    stopping_backend)


class ForwardTimer:
    """Time spent inside the language model's forwards, by kind (prefill: prompt pieces; decoding: one id per row),
    in the vocabulary projection (the head, outside those forwards) and in the vision encoder. On CUDA each hook
    synchronizes, so kernels are timed where they run."""

    def __init__(self, model):
        import torch

        self.seconds = defaultdict(float)
        self.sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
        self._started = {}
        transformer = model.transformer
        self.hooks = [transformer.register_forward_pre_hook(self._start_language, with_kwargs=True),
                      transformer.register_forward_hook(self._stop("language")),
                      transformer.visual.register_forward_pre_hook(self._start("vision")),
                      transformer.visual.register_forward_hook(self._stop("vision")),
                      model.lm_head.register_forward_pre_hook(self._start("vocabulary")),
                      model.lm_head.register_forward_hook(self._stop("vocabulary"))]

    def _start_language(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        kind = "decoding" if ids is not None and ids.shape[1] == 1 else "prefill"
        self.sync()
        self._started["language"] = (kind, time.perf_counter())

    def _start(self, name):
        def hook(module, args):
            self.sync()
            self._started[name] = (name, time.perf_counter())
        return hook

    def _stop(self, name):
        def hook(module, args, output):
            self.sync()
            kind, started = self._started.pop(name)
            self.seconds[kind] += time.perf_counter() - started
        return hook

    def remove(self):
        for hook in self.hooks:
            hook.remove()


def run_stage(name, backend, work, outputs_of):
    """Run one stage (work(backend)), print its figures; returns the number of outputs it left undone."""
    timer = ForwardTimer(backend.model)
    start = time.perf_counter()
    try:
        summaries = work(backend)
    finally:
        timer.remove()
    wall = time.perf_counter() - start
    made, wanted = outputs_of(summaries)
    stats, seconds = backend.stats, timer.seconds
    shares = ", ".join(f"{kind} {seconds[kind]:.1f} s ({seconds[kind] / wall:.0%})"
                       for kind in ("prefill", "decoding", "vocabulary", "vision"))
    other = wall - sum(seconds.values())
    # Vision runs inside the language forward on the sampling path only; the greedy path encodes before prefill.
    print(f"{name}: {made}/{wanted} in {wall:.1f} s ({made / wall:.2f}/s); generated "
          f"{stats.get('generated_tokens', 0):,} tokens ({stats.get('generated_tokens', 0) / wall:.1f}/s), prompts "
          f"{stats.get('prompt_tokens', 0):,} tokens ({stats.get('prompt_tokens', 0) / wall:.1f}/s)\n"
          f"  time in {shares}, other {other:.1f} s ({other / wall:.0%}); {stats.get('decoding_steps', 0)} decoding "
          f"steps\n  {prefill_line(stats)}", flush=True)
    return wanted - made


def answers_made(summaries):
    made = sum(summary.done for summary in summaries)
    return made, sum(summary.samples for summary in summaries)


def reviews_made(folder: Path, answers_folder: Path, metrics: int):
    """Reviews written (a review with text, parsed or not) against 8 per answered sample."""
    def count(summaries):
        made = wanted = 0
        for path in answers_folder.glob("*.json"):
            wanted += metrics * sum(1 for record in json.loads(path.read_text(encoding="utf-8"))
                                    if record["conversations"][1].get("answer"))
            reviewed = folder / path.name
            if reviewed.exists():
                made += sum(1 for record in json.loads(reviewed.read_text(encoding="utf-8"))
                            for entry in (record.get("rm_review") or {}).values() if entry.get("review"))
        return made, wanted
    return count


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model_path", default=str(TINY_CHECKPOINT), help="the evaluated model's checkpoint")
    parser.add_argument("--judge_path", default=None, help="the reward model's checkpoint (default: --model_path)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: the loader's (float32 on CPU)")
    parser.add_argument("--batch_size", type=int, default=8, help="rows decoding together (the scripts' default 8)")
    parser.add_argument("--test_dir", default=None, help="folder of test JSON files (default: published In-Test)")
    parser.add_argument("--image_dir", default=None, help="their images (needed with --test_dir)")
    parser.add_argument("--samples", type=int, default=None, help="keep N published samples (without --test_dir)")
    parser.add_argument("--output_dir", default=None, help="keep answers and reviews here; reruns resume")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument("--published_lengths", action="store_true",
                        help="end outputs at lengths drawn from the published ones (for random tiny checkpoints)")
    args = parser.parse_args(argv)
    if (args.test_dir is None) != (args.image_dir is None):
        parser.error("--test_dir and --image_dir go together")
    if args.test_dir is not None and args.samples is not None:
        parser.error("--samples picks published samples; it does not apply to --test_dir")
    for name in ("batch_size", "samples", "max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.test_dir is not None and not Path(args.test_dir).is_dir():
        parser.error(f"--test_dir {args.test_dir}: no such folder")
    return args


class LengthRule:
    """The stop rule of --published_lengths (fresh processors per request), its lengths set per stage."""

    def __init__(self):
        self.lengths, self.pad_id, self.end_id = None, None, None

    def __call__(self):
        return length_stop(self.lengths, self.pad_id, self.end_id)

    def load(self, path, args):
        """The hf backend for a checkpoint, with this rule when --published_lengths."""
        backend = stopping_backend(self if args.published_lengths else None)(
            path, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
        self.pad_id, self.end_id = backend.model.generation_config.pad_token_id, backend.tokenizer.im_end_id
        return backend


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from mmrole.backends.base import GenerationParams
    from mmrole.common.metrics import METRIC_NAMES
    from mmrole.eval.answer import answer_files
    from mmrole.eval.files import input_files
    from mmrole.eval.review import ReviewConfig, review_files

    params = GenerationParams(greedy=True, max_new_tokens=args.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output_dir or tmp)
        if args.test_dir is None:
            if not (out / "tests").is_dir():
                prepare_samples(args.samples, "mmrole-agent", out, subfolder="tests")
            test_dir, image_dir = out / "tests", out / "images"
        else:
            test_dir, image_dir = Path(args.test_dir), Path(args.image_dir)
        print(f"device {args.device}, dtype {args.dtype or 'default'}, batch {args.batch_size}; torch threads "
              f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}", flush=True)
        start = time.perf_counter()
        rule = LengthRule()
        backend = rule.load(args.model_path, args)
        rule.lengths = published_answer_lengths(backend.tokenizer) if args.published_lengths else None
        undone = run_stage("answers", backend, lambda backend: answer_files(
            input_files(test_dir, None), out / "answers", backend, params, image_dir, progress=False), answers_made)
        if args.judge_path not in (None, args.model_path):
            del backend
            backend = rule.load(args.judge_path, args)
        backend.stats = {}
        rule.lengths = published_review_lengths(backend.tokenizer) if args.published_lengths else None
        config = ReviewConfig(image_dir=str(image_dir), params=params, progress=False)
        undone += run_stage("reviews", backend, lambda backend: review_files(
            input_files(out / "answers", None), out / "reviews", backend, config),
            reviews_made(out / "reviews", out / "answers", len(METRIC_NAMES)))
        print(f"whole evaluation: {time.perf_counter() - start:.1f} s (model loading included); load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    if undone:
        print(f"{undone} answers/reviews were not generated (see the messages above)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
