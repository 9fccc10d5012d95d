"""A scripted agent for the demo: answers every test sample the way the demo dataset's templates would, so the
demo evaluates a strong agent beside the tiny fine-tuned one (the role GPT-4 plays in the paper's Table 5).

    python -m mmrole.demo.scripted --data_root demo_output/MMRole-Data --input_dir demo_output/data/test/in-distribution \\
        --output_dir demo_output/eval/in-test_answers/demo-scripted [--seed 0]

It reads what a perfect agent would see: the sample's character (`role`) and its image's dominant colour and shape
(from the dataset's demo_manifest.json, standing in for eyes). Its reply: the catchphrase, what it sees, and how the
character feels about the colour (mmrole.demo.data.remark): in other words than the ground truth, never a copy of
it. Output: the test file with `conversations[1].answer`, as inference.py writes it.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

from ..common.cli import EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser
from ..common.store import atomic_write_json
from ..eval.files import input_files, load_json_list
from .data import DemoCharacter, DemoImage, character, join_sentences, read_manifest, remark


def scripted_reply(role: DemoCharacter, image: DemoImage, rng: random.Random) -> str:
    return join_sentences(role, role.catchphrase, remark(role, image, rng))


def answer_files(data_root, input_dir, output_dir, *, seed: int = 0, input_file: Optional[str] = None
                 ) -> Tuple[int, int]:
    """Answer every test file of INPUT_DIR (or just `input_file` there) into OUTPUT_DIR/<same name>. Returns
    (files, answers)."""
    images = read_manifest(data_root)["images"]
    rng = random.Random(seed)
    files = answers = 0
    for path in input_files(input_dir, input_file):
        out = []
        for record in load_json_list(path):
            role, info = character(record.get("role", "")), images.get(record.get("image", ""))
            if role is None or info is None:
                raise ValueError(f"{path}: sample {record.get('id')}: not a sample of the demo data "
                                 f"(role {record.get('role')!r}, image {record.get('image')!r})")
            answered = json.loads(json.dumps(record))
            image = DemoImage(record["image"], info["colour"], info["shape"])
            answered["conversations"][1]["answer"] = scripted_reply(role, image, rng)
            out.append(answered)
            answers += 1
        atomic_write_json(Path(output_dir) / path.name, out, final_newline=False)
        files += 1
    return files, answers


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(prog="python -m mmrole.demo.scripted", description=__doc__)
    parser.add_argument("--data_root", required=True, help="the demo dataset (python -m mmrole.demo.data)")
    parser.add_argument("--input_dir", required=True, help="test files (data_prep/build_data.py's test/<split>/)")
    parser.add_argument("--input_file", default=None, help="only this file of --input_dir")
    parser.add_argument("--output_dir", required=True, help="answers files go here, named like the test files")
    parser.add_argument("--seed", type=int, default=0, help="which template phrasing (default 0)")
    args = parser.parse_args(argv)
    try:
        files, answers = answer_files(args.data_root, args.input_dir, args.output_dir, seed=args.seed,
                                      input_file=args.input_file)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"scripted agent: {answers} answers in {files} files -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
