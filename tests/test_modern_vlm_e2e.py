"""A current vision-language model through the whole MMRole pipeline, on CPU (issue 18's proof):

    real MMRole-Data slice --build_data.py--> train.json --data_prep/export.py--> messages + images records
      --TRL SFTTrainer--> a fine-tuned tiny Qwen2.5-VL --inference.py --backend transformers--> answers
      --eval/RM_review.py (the tiny Qwen-VL reward model, hf backend)--> reviews --RM_result.py / report.py--> Table 5

The training is docs/training.md's TRL recipe at a tiny size. TRL's vision collator learns from every token unless
told otherwise (checked below, not assumed); assistant_only_loss=True with a chat template that marks assistant
turns restricts the labels to the assistant's answer."""

import csv
import json
import time
from pathlib import Path

import pytest
import torch

from mmrole.backends.transformers import load_processor
from tests.support.checkpoints import tiny_checkpoint
from tests.support.raw_data import real_slice
from tests.support.scripts import load_script

build_data = load_script("data_prep/build_data.py")
export = load_script("data_prep/export.py")
inference = load_script("inference.py")
RM_review = load_script("eval/RM_review.py")
RM_result = load_script("eval/RM_result.py")
report = load_script("eval/report.py")

MODEL = "tiny-qwen2.5-vl-agent"


def shortest(records, count):
    """The samples with the shortest prompts: a training step on CPU costs about the prompt's length times the
    151,936-word vocabulary (the output layer dominates a tiny model)."""
    return sorted(records, key=lambda r: len(json.dumps(r, ensure_ascii=False)))[:count]


def learned_text(processor, batch):
    labels = batch["labels"][0]
    return processor.tokenizer.decode(labels[labels != -100])


def fine_tune(checkpoint, data_file, output_dir):
    """docs/training.md's TRL recipe, at a tiny size on CPU."""
    from datasets import load_dataset
    from transformers import AutoModelForImageTextToText
    from trl import SFTConfig, SFTTrainer

    dataset = load_dataset("json", data_files=str(data_file), split="train")
    processor = load_processor(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32, local_files_only=True)
    args = SFTConfig(output_dir=str(output_dir), assistant_only_loss=True, max_length=None, max_steps=3,
                     per_device_train_batch_size=1, learning_rate=3e-3, lr_scheduler_type="constant", warmup_steps=0,
                     logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                     activation_checkpointing=False, dataloader_num_workers=0, seed=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    return trainer, processor, dataset


@pytest.mark.slow
def test_fine_tune_a_current_vlm_with_trl_then_evaluate_it_here(mmrole_data, mmrole_reference, qwen_reference,
                                                                tiny_qwen2_5_vl, tmp_path):
    started = time.monotonic()
    raw = real_slice(mmrole_data, tmp_path / "MMRole-Data")
    data = tmp_path / "data"
    assert build_data.main(["--data_root", str(raw), "--output_dir", str(data), "--in_test_per_type", "1"]) == 0
    assert export.main(["--input_file", str(data / "train" / "train.json"), "--image_dir", str(raw),
                        "--output_dir", str(tmp_path / "export"), "--format", "messages", "--check_images"]) == 0
    exported = [json.loads(line) for line in (tmp_path / "export" / "train.messages.jsonl").read_text().splitlines()]
    chosen = shortest(exported, 1)
    (tmp_path / "slice.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen))

    trainer, processor, dataset = fine_tune(tiny_qwen2_5_vl, tmp_path / "slice.jsonl", tmp_path / "run")
    # Labels only on the assistant turn: what is learned is the answer and its end-of-turn token, nothing else.
    target = chosen[0]["messages"][2]["content"][0]["text"]
    assert learned_text(processor, trainer.data_collator([dict(dataset[0])])) == target + "<|im_end|>"
    # ... which TRL does not do by default for vision-language data: it learns the prompt too.
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    default = DataCollatorForVisionLanguageModeling(processor)([dict(dataset[0])])
    assert chosen[0]["messages"][1]["content"][1]["text"][:40] in learned_text(processor, default)

    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    agent = tmp_path / "checkpoints" / MODEL
    trainer.save_model(str(agent))
    processor.save_pretrained(str(agent))

    # The agent (transformers backend) answers the test file; the reward model (hf backend) judges.
    eval_dir = tmp_path / "eval"
    answers = eval_dir / "in-test_answers" / MODEL
    assert inference.main(["--backend", "transformers", "--model_path", str(agent), "--input_dir",
                           str(data / "test" / "in-distribution"), "--image_dir", str(raw / "images"),
                           "--output_dir", str(answers), "--no_random", "--max_new_tokens", "8", "--no_progress"]) == 0
    answered = [s for f in sorted(answers.glob("*_test.json")) for s in json.loads(f.read_text())]
    assert len(answered) == 3 and all(s["conversations"][1]["answer"] for s in answered)
    judge = tiny_checkpoint(qwen_reference, tmp_path / "reward-model", max_new_tokens=8)
    reviews = eval_dir / "in-test_reviews" / MODEL
    status = RM_review.main(["--model_path", str(judge), "--input_dir", str(answers), "--image_dir",
                             str(raw / "images"), "--output_dir", str(reviews), "--no_random", "--no_progress"])
    assert status in (0, 3)  # a random judge rarely writes a score pair: such reviews are listed, not scored
    reviewed = [s for f in sorted(reviews.glob("*_test.json")) for s in json.loads(f.read_text())]
    assert len(reviewed) == 3 and all(len(s["rm_review"]) == 8 for s in reviewed)
    journal = [json.loads(line) for f in reviews.glob("*.journal.jsonl") for line in f.read_text().splitlines()]
    assert {entry["run"]["backend"] for entry in journal} == {"hf"}  # the judge's own backend

    results = eval_dir / "in-test_results" / MODEL
    assert RM_result.main(["--input_dir", str(reviews), "--output_dir", str(results), "--partial"]) == 0
    assert sorted(p.name for p in results.glob("*.csv")) == ["comment_test.csv", "human-role_test.csv",
                                                             "inter-role_test.csv"]
    published = eval_dir / "in-test_results" / "mmrole-agent"
    published.symlink_to(mmrole_reference / "in-test_results" / "mmrole-agent")
    assert report.main(["--eval_dir", str(eval_dir), "--models", MODEL, "mmrole-agent", "--output_dir",
                        str(tmp_path / "report"), "--partial"]) == 0
    with open(tmp_path / "report" / "table5.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert MODEL in rows and "mmrole-agent" in rows
    print(f"\nend to end: {time.monotonic() - started:.1f} s, losses {losses}")


def test_trl_learns_only_the_answer_with_the_released_qwen2_5_vl_template_too(tiny_qwen2_5_vl, tmp_path):
    """docs/training.md's claim for released checkpoints, whose template has no `{% generation %}` markers: TRL
    swaps in its own marked variant of the Qwen2.5-VL template. The released template is the one TRL ships."""
    import trl
    from PIL import Image

    released = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5_vl.jinja").read_text(encoding="utf-8")
    assert "generation %}" not in released
    folder = tmp_path / "released-template"
    folder.mkdir()
    for item in tiny_qwen2_5_vl.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "chat_template.json").unlink()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": released}))
    Image.new("RGB", (64, 48), "red").save(tmp_path / "image.png")
    record = {"messages": [{"role": "system", "content": [{"type": "text", "text": "You are Woody."}]},
                           {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Who is this?"}]},
                           {"role": "assistant", "content": [{"type": "text", "text": "Buzz Lightyear!"}]}],
              "images": [str(tmp_path / "image.png")]}
    (tmp_path / "one.jsonl").write_text(json.dumps(record) + "\n")
    trainer, processor, dataset = fine_tune(folder, tmp_path / "one.jsonl", tmp_path / "run")
    assert processor.chat_template == released
    assert learned_text(processor, trainer.data_collator([dict(dataset[0])])) == "Buzz Lightyear!<|im_end|>\n"
