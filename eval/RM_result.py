"""Per reviews file, one result CSV: the number of reviewed samples and, per metric, the mean
ratio of the evaluated answer's score to the ground truth's score (the published CSV format).

Samples without a review (empty answers in the original) and reviews without a valid score pair
are listed on stderr and never scored. --strict counts them instead, each with a ratio of 0.
A file that cannot be read (e.g. malformed JSON) is reported and gets no CSV; the other files are
scored, and the exit status is 1.
"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse

from mmrole.results import write_result_csvs
from mmrole.schema import SchemaError, print_problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dir", default="eval/mini_reviews/mmrole-agent", help="folder of reviews files (*.json)")
    parser.add_argument("--input_file", default=None, help="only this file of --input_dir")
    parser.add_argument("--output_dir", default="eval/mini_results/mmrole-agent", help="where <name>.csv goes")
    parser.add_argument("--strict", action="store_true",
                        help="count every sample; a missing or failed review contributes a ratio of 0")
    args = parser.parse_args(argv)
    try:
        results, unusable = write_result_csvs(args.input_dir, args.output_dir, args.input_file, strict=args.strict)
    except SchemaError as e:  # no such folder or file: nothing to do
        print(f"error: {e}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result.name}: count {result.count}")
        print_problems(result.problems, f"{result.name}: not scored" + (" (ratio 0)" if args.strict else ""))
    print_problems(unusable, "error: unusable files (no CSV written)")
    return 1 if unusable else 0


if __name__ == "__main__":
    sys.exit(main())
