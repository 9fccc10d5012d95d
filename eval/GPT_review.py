"""Judge reviews from a GPT-class model through any OpenAI-compatible endpoint: the same eight
metric prompts, image and system prompt as eval/RM_review.py, by default with --backend openai
--model gpt-4-turbo. This is how the reward model's training data was collected (turn the
reviews into training samples with eval/build_RM_data.py).

The API key is read from the environment variable named by --api_key_env (default
OPENAI_API_KEY) and never printed or written. A rerun resumes from the journal beside each output.

Exit status: 0 every review done (empty answers are left out and listed, as the original); 1 a file or
the output folder could not be used (named); 2 usage error or nothing to do (bad or inapplicable
flags, no input, no API key, the endpoint refused the key or the model); 3 some reviews not done
(API errors, no score pair after the retries, bad samples or images: listed; a rerun redoes them).
"""
import sys

from mmrole.eval.cli import review_main


def main(argv=None) -> int:
    return review_main(argv, description=__doc__, backend="openai", model_path="",
                       model="gpt-4-turbo")


if __name__ == "__main__":
    sys.exit(main())
