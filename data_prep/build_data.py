"""Build MMRole's instruction data from raw MMRole-Data (the layout of protocol §1):

  OUT/train/train.json                        training samples, Qwen-VL fine-tuning format
  OUT/test/<split>/<type>_test.json           In-Test (in-distribution) and Out-Test
                                              (out-of-distribution) samples, the published schema
  OUT/skipped.jsonl, OUT/build_stats.json     what was skipped and why; the printed statistics

One sample per target turn (id = <dialogue id>_<turn index>). With --test_ids FILE (one sample id a
line) the test sets are exactly those samples: this reproduces the official split. Without it the
split is sampled as in the paper (seeded): In-Test --in_test_per_type samples per dialogue type from
in-distribution characters; Out-Test one COCO and one character-image sample per
out-of-distribution character and type. Dialogues that give a test sample never appear in training.

Image files are not needed: missing ones are counted (e.g. MS-COCO, which the raw data does not
ship) and the samples kept; --check_images skips samples whose image is missing instead.
Unusable records (empty, truncated, unknown speakers, missing profiles, malformed JSON) are
skipped, counted and listed; the rest goes on.

Exit status: 0 built (skipped records are listed in skipped.jsonl: skipping them is this script's
job); 1 a file could not be used (a dialogue or annotations file that is not valid JSON, a damaged
roles.json/profiles.json, --test_ids unreadable, the output folder): named; 2 usage error (bad flags,
no such --data_root).
"""
import os
import sys

from mmrole.common.cli import (EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser, add_check_images_arguments,
                               add_hidden_alias, int_at_least)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data_root", required=True, help="raw MMRole-Data folder (profiles/, images/, dialogues/)")
    parser.add_argument("--output_dir", required=True, help="where train/ and test/ are written")
    parser.add_argument("--image_prefix", default="images/",
                        help="what the <img> path of training samples starts with (default images/: run "
                             "fine-tuning from a folder holding images/)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sampled split (default 42)")
    parser.add_argument("--test_ids", default=None,
                        help="file of test sample ids, one a line: the test sets are exactly these samples")
    parser.add_argument("--in_test_per_type", type=int_at_least(0), default=72,
                        help="sampled split: In-Test samples per dialogue type (default 72, as the paper)")
    add_check_images_arguments(parser, default=False,
                               checked="skip (and list) samples whose image file is missing, instead of only "
                                       "counting them",
                               unchecked="keep samples whose image file is missing (they are counted)")
    parser.add_argument("--image_dir", default=None,
                        help="where the image files are looked up (default DATA_ROOT/images)")
    add_hidden_alias(parser, "--image_root", of="--image_dir")
    parser.add_argument("--dialogues_root", default=None,
                        help="folder holding dialogues/ if not DATA_ROOT (e.g. the output of filter_dialogues.py)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from mmrole.common.cli import WRITE_ERRNOS, claim_output_folder_or_say_why, write_error_message
    from mmrole.data.build import BuildOptions, build
    from mmrole.data.samples import read_test_ids
    from mmrole.data.raw import RawDataError

    args = parse_args(argv)
    if not os.path.isdir(args.data_root) or not any(os.scandir(args.data_root)):
        print(f"error: --data_root {args.data_root}: no such folder, or an empty one: nothing to do", file=sys.stderr)
        return EXIT_USAGE
    out = args.output_dir
    folder = claim_output_folder_or_say_why(out, [(os.path.join(out, "train"), False),
                                                  (os.path.join(out, "test"), True)])
    if folder is None:
        return EXIT_UNUSABLE
    for note in folder.notes:
        print(note, file=sys.stderr)
    try:
        test_ids = read_test_ids(args.test_ids) if args.test_ids else None
        result = build(BuildOptions(
            data_root=args.data_root, output_dir=args.output_dir, image_prefix=args.image_prefix, seed=args.seed,
            test_ids=test_ids, in_test_per_type=args.in_test_per_type, check_images=args.check_images,
            image_dir=args.image_dir, dialogues_root=args.dialogues_root,
        ))
    except RawDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as e:
        print(f"error: {write_error_message(e) if e.errno in WRITE_ERRNOS else e}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        folder.release()
    unreadable = [skip for skip in result.skips if skip.reason == "malformed_file"]
    for skip in unreadable:
        print(f"error: file not used: {skip}", file=sys.stderr)
    return EXIT_UNUSABLE if unreadable else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
