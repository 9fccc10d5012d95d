"""MMRole-Eval review with the reward model: for every answer and each of the eight metrics, the
judge compares the evaluated answer (Model A) with the ground truth (Model B) about the image and
gives a review ending in `[Scores]: (A, B)`. Output: the answers files with
rm_review[metric] = {review, score} (score {} when the review cannot be parsed), in --output_dir.

Backends: hf (the local reward model, e.g. MMRole-Eval_RM; requests batched across metrics and
samples) or openai (any OpenAI-compatible endpoint). A rerun resumes from the journal
(<output>.journal.jsonl) beside each output; bad samples are reported and skipped.

Exit status: 0 every review done (empty answers are left out and listed, as the original); 1 a file or
the output folder could not be used (named); 2 usage error or nothing to do (bad or inapplicable
flags, no input, no API key, the endpoint refused the key or the model); 3 some reviews not done
(API errors, no score pair after the retries, bad samples or images: listed; a rerun redoes them).
"""
import sys

from mmrole.eval.cli import review_main


def main(argv=None) -> int:
    return review_main(argv, description=__doc__, backend="hf", model_path="model_weights/MMRole-Eval_RM")


if __name__ == "__main__":
    sys.exit(main())
