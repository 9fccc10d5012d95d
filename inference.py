"""Answers of a multimodal role-playing agent for the MMRole test sets.

For every sample of the test files in --input_dir the model gets the role-play system prompt
and the query [image, prompt] (the image path joined to --image_dir, as the original), and the
answer goes to conversations[1].answer of the same file in --output_dir (the published answers
schema). Backends: hf (a local Qwen-VL checkpoint such as MMRole-Agent; batched; --use_lora) or
openai (any OpenAI-compatible endpoint: a GPT-4-class API, a vLLM server, mmrole.serve).
--no_random decodes greedily; otherwise the checkpoint's generation_config.json applies (hf).
A rerun resumes from the journal (<output>.journal.jsonl); bad samples (a damaged or non-image file,
a duplicate sample id, ...) are reported with file and sample id and skipped. Journal answers count
only for the model, settings and prompt that made them (--redo_stale). Flags of the other backend, and
--temperature/--top_p with --no_random, are refused rather than ignored.

Exit status: 0 every sample answered; 1 a file or the output folder could not be used (named);
2 usage error or nothing to do (bad flags, no input, no API key, the endpoint refused the key or the
model); 3 some samples not answered (listed; a rerun asks the failed ones again).
"""
import sys

from mmrole.common.cli import ArgumentParser
from mmrole.eval.answer import answer_files
from mmrole.eval.cli import (add_backend_arguments, add_generation_arguments, add_io_arguments, generation_params,
                             refuse_inapplicable_flags, run_with_backend)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__)
    add_io_arguments(parser, input_dir="data/test/in-distribution", output_dir="eval/in-test_answers/mmrole-agent")
    add_backend_arguments(parser, backend="hf", model_path="model_weights/MMRole-Agent")
    add_generation_arguments(parser)
    args = parser.parse_args(argv)
    refuse_inapplicable_flags(parser, args, argv)
    return run_with_backend(args, lambda inputs, backend: answer_files(
        inputs, args.output_dir, backend, generation_params(args), args.image_dir, progress=not args.no_progress,
        redo_stale=args.redo_stale))


if __name__ == "__main__":
    sys.exit(main())
