"""Generate character profiles for MMRole-Data with any OpenAI-compatible chat model.

Named characters (listed in DATA_ROOT/profiles/<split>/roles.json, with a source article in
raw_info_en/<Name>.txt or, for characters of a Chinese script, raw_info_zh/<Name>.txt):
  source text -> detailed profile (detailed_profiles/<Name>.json: introduction, personality,
  experience, relationship, catchphrase) -> condensed markdown profile (profiles.json), written in
  the character's language.
Hypothetical characters (--num_hypothetical N): meta information for N new invented people
(meta_info_hypo/<Name>.json: name, gender, age, origin, personality, experience; added to
roles.json under "Hypothetical Characters"), then expanded the same way.

Output: the raw layout under OUTPUT_DIR/profiles/<split>/ (OUTPUT_DIR defaults to DATA_ROOT).
Existing profiles are kept; a rerun skips what is done and retries what failed (journal in
OUTPUT_DIR/.generation/). Replies that are not the requested format are retried, and reported
after the last attempt, never written; such rejected items are not paid for again by a rerun unless
--retry_rejected. The API key comes from the environment ($OPENAI_API_KEY).

Exit status: 0 every profile made; 1 a file the run depends on (roles.json, profiles.json...) or the
output folder could not be used (named); 2 usage error (bad flags, no API key, the endpoint refused
the key or the model); 3 profiles not made (failed, rejected or skipped: each listed).
"""
import sys

from mmrole.common.cli import ArgumentParser, int_at_least


def parse_args(argv=None):
    from mmrole.data.generate.runner import add_client_arguments

    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data_root", required=True, help="raw MMRole-Data folder (profiles/<split>/...)")
    parser.add_argument("--split", default="in-distribution", choices=["in-distribution", "out-of-distribution"])
    parser.add_argument("--output_dir", default=None, help="where the raw layout is written (default DATA_ROOT)")
    parser.add_argument("--characters", nargs="+", default=None, help="only these characters (default all)")
    parser.add_argument("--num_hypothetical", type=int_at_least(0), default=0, help="invent this many new people first")
    parser.add_argument("--hypothetical_batch", type=int_at_least(1), default=10, help="people per request (default 10)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate profiles that already exist")
    add_client_arguments(parser, default_max_new_tokens=2048)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from mmrole.data.generate.runner import run_generator_cli
    from mmrole.data.generate.profiles import ProfileOptions, generate_profiles

    args = parse_args(argv)
    options = ProfileOptions(
        data_root=args.data_root, split=args.split, output_dir=args.output_dir, characters=args.characters,
        num_hypothetical=args.num_hypothetical, hypothetical_batch=args.hypothetical_batch,
        overwrite=args.overwrite, max_items=args.max_items, progress=not args.no_progress,
        retry_rejected=args.retry_rejected)
    return run_generator_cli(args, lambda client: generate_profiles(client, options))


if __name__ == "__main__":
    sys.exit(main())
