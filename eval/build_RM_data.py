"""Reward-model training data from judge reviews (e.g. GPT-4 reviews from eval/GPT_review.py).

Each review with a parseable score pair becomes one sample in the Qwen-VL fine-tuning format:
the evaluator system prompt, the user turn "Picture 1: <img>IMAGE</img>\\n" + the exact judge
prompt, and the review as the assistant turn. Reviews without a parseable score pair (or whose
stored score disagrees with the text), samples without a review and missing images are listed on
stderr and left out. A file that cannot be read (e.g. malformed JSON) is reported, the other
files still make the output, and the exit status is 1. Output: one JSON list for
finetune/finetune.py (--data_path).

Exit status: 0 done (left-out reviews are listed: leaving them out is this script's job); 1 a reviews
file could not be read, or the output could not be written (named); 2 usage error or nothing to do (no
such folder, no *.json in it).
"""
import sys

from mmrole.common.cli import (EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser, add_check_images_arguments,
                               add_hidden_alias, write_error_message)
from mmrole.common.problems import print_problems
from mmrole.common.store import atomic_write_json
from mmrole.eval.files import SchemaError, input_files
from mmrole.eval.rm_data import build_rm_data


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--input_dir", nargs="+", required=True,
                        help="reviews folder(s), e.g. judge_reviews/<model> (one per reviewed model)")
    parser.add_argument("--input_file", default=None, help="only this file of each --input_dir")
    parser.add_argument("--image_dir", default="images",
                        help="image root; joined to each sample's image as in the prompt the judge saw")
    parser.add_argument("--output_file", required=True, help="the training data (JSON list)")
    parser.add_argument("--include_swapped", action="store_true", help="also use rm_review_swapped (from --swap)")
    add_check_images_arguments(parser, default=True,
                               checked="leave out (and list) samples whose image is missing or damaged here: the trainer "
                                       "would stop at such a sample",
                               unchecked="do not require the images to exist here (e.g. building on another machine)")
    add_hidden_alias(parser, "--no_image_check", of="--no_check_images")
    args = parser.parse_args(argv)
    try:
        inputs = [path for folder in args.input_dir for path in input_files(folder, args.input_file)]
        samples, problems = build_rm_data(inputs, args.image_dir, include_swapped=args.include_swapped,
                                          check_images=args.check_images)
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        atomic_write_json(args.output_file, samples)
    except OSError as e:
        print(f"error: {write_error_message(e)}", file=sys.stderr)
        return EXIT_UNUSABLE
    unusable = [p for p in problems if p.whole_file]
    print(f"{len(samples)} training samples from {len(inputs) - len(unusable)} of {len(inputs)} file(s) "
          f"-> {args.output_file}")
    print_problems([p for p in problems if not p.whole_file], "left out")
    print_problems(unusable, "error: unusable files (left out)")
    return EXIT_UNUSABLE if unusable else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
