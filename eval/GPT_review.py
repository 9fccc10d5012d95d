"""Judge reviews from a GPT-class model through any OpenAI-compatible endpoint: the same eight
metric prompts, image and system prompt as eval/RM_review.py, by default with --backend openai
--model gpt-4-turbo. This is how the reward model's training data was collected (turn the
reviews into training samples with eval/build_RM_data.py).

The API key is read from the environment variable named by --api_key_env (default
OPENAI_API_KEY) and never printed or written. A rerun resumes from the journal beside each output.
"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmrole.cli import review_main


def main(argv=None) -> int:
    return review_main(argv, description=__doc__, backend="openai", model_path="",
                       model="gpt-4-turbo")


if __name__ == "__main__":
    sys.exit(main())
