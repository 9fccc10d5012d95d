"""Generate MMRole-Data dialogues about images with any OpenAI-compatible vision chat model.

For every character of the split (roles.json + profiles.json under DATA_ROOT/profiles/<split>/)
and every dialogue type, one dialogue per image: all character-related images of the character's
script (annotated in DATA_ROOT/images/annotations.json; the annotation goes into the prompt) and
--coco_per_character MS-COCO images sampled (seeded) from --coco_dir. The image is sent as a base64
data URL.
  comment     a question from the fixed pool of 10 English / 10 Chinese questions, and the
              character's monologue
  human-role  a curious human opens; --rounds turns each
  inter-role  a partner of the same script opens; --rounds turns each
  (a reply may have --rounds_tolerance rounds more or fewer; outside 2-20 rounds, give
  filter_dialogues.py a matching --dialogue_turns)
Output: OUTPUT_DIR/dialogues/<split>/<type>/<Name>_{COCO,script}.json (out-of-distribution:
<type>.json, one COCO and one character image per character), ids as in the released data.
A reply must pass the checks of build_data and filter_dialogues, else it is retried and finally
reported, never written; a commentary must also be as long as the released ones (a one-line reply
is rejected). Images are checked before any request: one that is not an image, or is damaged, is
named with its dialogue id and skipped. Existing records count as done; a rerun continues (journal in
OUTPUT_DIR/.generation/) and retries failed requests; dialogues whose every reply was rejected are
not paid for again unless --retry_rejected. The API key comes from the environment ($OPENAI_API_KEY).

Exit status: 0 every dialogue made; 1 a file the run depends on, an existing output file or the output
folder could not be used (named); 2 usage error (bad flags, no API key, the endpoint refused the key or
the model); 3 dialogues not made (failed, rejected or skipped: each listed).
"""
import sys

from mmrole.common.cli import ArgumentParser, int_at_least


def parse_args(argv=None):
    from mmrole.data.generate.runner import add_client_arguments

    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data_root", required=True, help="raw MMRole-Data folder (profiles/, images/)")
    parser.add_argument("--split", default="in-distribution", choices=["in-distribution", "out-of-distribution"])
    parser.add_argument("--output_dir", default=None, help="where dialogues/ is written (default DATA_ROOT)")
    parser.add_argument("--types", nargs="+", default=["comment", "human-role", "inter-role"],
                        choices=["comment", "human-role", "inter-role"], help="dialogue types (default all)")
    parser.add_argument("--characters", nargs="+", default=None, help="only these characters (default all)")
    parser.add_argument("--coco_dir", default=None, help="MS-COCO images (default DATA_ROOT/images/COCO/train2017)")
    parser.add_argument("--coco_per_character", type=int_at_least(0), default=None,
                        help="COCO images per character and type (default 50; out-of-distribution 1)")
    parser.add_argument("--script_per_character", type=int_at_least(0), default=None,
                        help="character-related images per character and type (default all; out-of-distribution 1)")
    parser.add_argument("--rounds", type=int_at_least(1), default=6,
                        help="turns of each speaker in multi-turn dialogues (default 6)")
    parser.add_argument("--rounds_tolerance", type=int_at_least(0), default=2,
                        help="a reply may have this many rounds more or fewer (default 2: 8-16 turns for 6 rounds)")
    parser.add_argument("--seed", type=int, default=42, help="seed of image, question and partner choices (default 42)")
    add_client_arguments(parser, default_max_new_tokens=3000)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from mmrole.data.generate.dialogues import DialogueOptions, generate_dialogues
    from mmrole.data.generate.runner import run_generator_cli

    args = parse_args(argv)
    options = DialogueOptions(
        data_root=args.data_root, split=args.split, output_dir=args.output_dir, types=args.types,
        characters=args.characters, coco_dir=args.coco_dir, coco_per_character=args.coco_per_character,
        script_per_character=args.script_per_character, rounds=args.rounds,
        rounds_tolerance=args.rounds_tolerance, seed=args.seed,
        max_items=args.max_items, progress=not args.no_progress, retry_rejected=args.retry_rejected)
    return run_generator_cli(args, lambda client: generate_dialogues(client, options))


if __name__ == "__main__":
    sys.exit(main())
