"""Training throughput: useful (non-padding) tokens per second, dynamic padding vs padding to model_max_length.

The original fine-tuning script padded every sample to model_max_length (3072 for MMRole-Agent, 4096 for the
reward model) although MMRole samples are much shorter; finetune.py pads each batch to its longest sample. All
sides train the same tiny checkpoint (a fresh copy each, same seed) on the same real MMRole-like samples, in one
run, interleaved batch by batch so that a busy machine slows every side alike:

- role-play: MMRole-Agent training samples rebuilt from the raw MMRole-Data (all three dialogue types, the
  role-play system prompt), model_max_length 3072;
- judge: reward-model samples built from the published MMRole-Eval reviews (evaluator system prompt, the judge
  prompt with both answers), model_max_length 4096.

Sides: (1) the original: padded to model_max_length, the model's loss from logits at every position;
(2) dynamic padding, same loss computation: THE ratio (2)/(1) is the padding effect; (3) (2) with length-grouped
batches (--train_sampling_strategy group_by_length); (4) the step finetune.py runs by default: dynamic padding and
logits only at the learned positions (mmrole/finetune/loss.py). Each step is the whole training step: collate
(pad, read images), forward, backward, AdamW. Useful tokens are the attention-mask ones; the first batch of each
side is a warm-up.

Rows go through the model one at a time (accumulating gradients inside a batch): full-vocabulary logits of a
padded 4096-token row are 2.5 GB on the CPU, and the work per padded row is what padding changes. On the tiny
model the 151,936-row lm_head dominates (1)-(3), so the cost per token is uniform as on the real model, where
the decoder dominates; side (4) gains far more here than it would on the real model (there it mainly saves the
memory of the logits). Images missing from the snapshot
(MS-COCO) are replaced by small generated images: an image is 258 tokens whatever its content.
A benchmark, not a test: slow on a CPU (52 minutes with the defaults on 2 cores shared with other jobs;
the figures are in docs/training.md).

    python bench/train_throughput.py [--samples 12] [--batch_size 4] [--seed 0]
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MMROLE_SHARED", REPO.parent / "shared"))
PAPER_MAX_LEN = {"role-play": 3072, "judge": 4096}


def roleplay_records(data_root: Path, count: int, rng: random.Random):
    """Role-play training samples of `count` random dialogues (one random target turn each), all types."""
    from mmrole.common.prompts import ROLEPLAY_SYSTEM
    from mmrole.data.raw import IN_DISTRIBUTION, load_annotations, load_dialogues, load_split
    from mmrole.data.samples import dialogue_sample

    raw, _ = load_split(data_root, IN_DISTRIBUTION)
    annotations, _ = load_annotations(data_root)
    dialogues = rng.sample(load_dialogues(data_root, raw).dialogues, count)
    records = []
    for dialogue in dialogues:
        sample = dialogue_sample(dialogue, rng.choice(dialogue.sample_indices()), annotations, raw.profiles)
        records.append({**sample.train_record(), "system": ROLEPLAY_SYSTEM})
    return records


def judge_records(reference: Path, count: int, rng: random.Random):
    """Reward-model samples from the published reviews of every model (a random `count` of them)."""
    from mmrole.eval.rm_data import build_rm_data

    samples, _ = build_rm_data(sorted(reference.glob("in-test_reviews/*/*_test.json")), "images", check_images=False)
    return rng.sample(samples, count)


def provide_images(records, data_root: Path, image_root: Path) -> None:
    """Every <img> path of the records under image_root: the snapshot's file if it has it, else a small image."""
    from PIL import Image

    for record in records:
        for turn in record["conversations"]:
            for path in (part.split("</img>")[0] for part in turn["value"].split("<img>")[1:]):
                target = image_root / path
                if target.exists():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = data_root / path
                if source.is_file():
                    target.symlink_to(source.resolve())
                else:
                    Image.new("RGB", (64, 48), (120, 160, 200)).save(target, format="PNG")


def batch_orders(lengths, batch_size: int, seed: int):
    """Index batches: random order (the Trainer's default) and length-grouped (its group_by_length sampler)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    random_order = list(range(len(lengths)))
    random.Random(seed).shuffle(random_order)
    grouped = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    split = lambda order: [order[i:i + batch_size] for i in range(0, len(order), batch_size)]  # noqa: E731
    return split(random_order), split(grouped)


class Side:
    """One way of training: its batches, its collator, its loss; a fresh model (same seed) and AdamW."""

    def __init__(self, label, batches, collate, loss_of, model_dir: Path, seed: int):
        import torch
        from transformers import AutoModelForCausalLM

        self.label, self.batches, self.collate, self.loss_of = label, batches, collate, loss_of
        torch.manual_seed(seed)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.05)
        self.useful = self.padded = 0
        self.seconds = 0.0

    def step(self, dataset, number: int, timed: bool) -> None:
        """Collate batch `number`, forward/backward each row (accumulating), AdamW step."""
        start = time.perf_counter()
        batch = self.collate([dataset[i] for i in self.batches[number]])
        rows = batch["input_ids"].size(0)
        for row in range(rows):  # one row at a time: bounded memory, the same work per padded row
            row_batch = {key: value[row:row + 1] for key, value in batch.items() if key != "pixel_values"}
            images = _row_images(batch, row, self.model.config.visual["image_start_id"])
            if images is not None:
                row_batch["pixel_values"] = images
            (self.loss_of(self.model, row_batch) / rows).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if timed:
            self.seconds += time.perf_counter() - start
            self.useful += int(batch["attention_mask"].sum())
            self.padded += batch["input_ids"].numel()

    @property
    def rate(self) -> float:
        return self.useful / self.seconds


def _row_images(batch, row: int, image_start_id: int):
    """The pixel_values rows that belong to `row` of the batch (images come in row-major order)."""
    if "pixel_values" not in batch:
        return None
    counts = (batch["input_ids"] == image_start_id).sum(dim=1).tolist()
    first = sum(counts[:row])
    return batch["pixel_values"][first:first + counts[row]] if counts[row] else None


def full_logits_loss(model, batch):
    """The original's loss: the model's own, from logits at every position."""
    return model(**batch).loss


def run_workload(name, records, args, workdir: Path, model_dir: Path, tokenizer):
    from mmrole.finetune.data import DataOptions, SupervisedCollator, build_dataset
    from mmrole.finetune.loss import supervised_loss

    data = workdir / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    max_len = PAPER_MAX_LEN[name]
    dataset, report = build_dataset(data, tokenizer, DataOptions(max_len=max_len, image_dir=workdir / "images"))
    if report.problems:
        print("\n".join(report.lines()))
    lengths = dataset.lengths
    print(f"\n{name}: {len(dataset)} samples, tokens min {min(lengths)} / mean {sum(lengths) / len(lengths):.0f} / "
          f"max {max(lengths)}, model_max_length {max_len}, batch size {args.batch_size}", flush=True)
    random_batches, grouped_batches = batch_orders(lengths, args.batch_size, args.seed)
    image_size = json.loads((model_dir / "config.json").read_text())["visual"]["image_size"]
    padded = SupervisedCollator(tokenizer.pad_token_id, image_size, pad_to=max_len)
    dynamic = SupervisedCollator(tokenizer.pad_token_id, image_size)
    sides = [
        Side("original: pad to max length", random_batches, padded, full_logits_loss, model_dir, args.seed),
        Side("dynamic padding", random_batches, dynamic, full_logits_loss, model_dir, args.seed),
        Side("dynamic padding, length-grouped", grouped_batches, dynamic, full_logits_loss, model_dir, args.seed),
        Side("finetune.py step (learned logits)", random_batches, dynamic, supervised_loss, model_dir, args.seed),
    ]
    # Interleaved, batch by batch, so that a busy machine slows every side alike; batch 0 warms up.
    for number in range(len(random_batches)):
        for side in sides:
            side.step(dataset, number, timed=number > 0)
    original = sides[0].rate
    print(f"  {'':34s} {'useful tok':>10s} {'padded tok':>10s} {'seconds':>8s} {'useful tok/s':>12s} {'vs original':>11s}")
    for side in sides:
        print(f"  {side.label:34s} {side.useful:10d} {side.padded:10d} {side.seconds:8.1f} {side.rate:12.1f} "
              f"{side.rate / original:10.2f}x")
    return sides[1].rate / original, sides[2].rate / original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--data_root", type=Path, default=SHARED / "mmrole_data", help="raw MMRole-Data")
    parser.add_argument("--reference", type=Path, default=SHARED / "mmrole_reference",
                        help="published answers/reviews (for the judge samples)")
    parser.add_argument("--samples", type=int, default=12, help="samples per workload (default 12)")
    parser.add_argument("--batch_size", type=int, default=4, help="per-device batch size (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.samples < 2 * args.batch_size:
        parser.error("--samples must cover at least two batches (the first one is a warm-up)")

    import torch

    from mmrole.qwen_vl import QWenTokenizer
    from mmrole.demo.tiny import write_tiny_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = write_tiny_checkpoint(workdir / "tiny-qwen-vl-chat", seed=args.seed)
        tokenizer = QWenTokenizer.from_pretrained(model_dir)
        workloads = {"role-play": roleplay_records(args.data_root, args.samples, rng),
                     "judge": judge_records(args.reference, args.samples, rng)}
        ratios = {}
        for name, records in workloads.items():
            provide_images(records, args.data_root, workdir / "images")
            ratios[name] = run_workload(name, records, args, workdir, model_dir, tokenizer)
    print("\nuseful tokens/s, dynamic padding vs padding to model_max_length (same loss computation): "
          + ", ".join(f"{name} {plain:.2f}x (length-grouped {grouped:.2f}x)"
                      for name, (plain, grouped) in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
