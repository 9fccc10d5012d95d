"""Agreement of two reviewers of the same answers (e.g. the reward model vs GPT-4), per metric:
MAE of the ratio evaluated / ground truth, Pearson correlation of the ratios, and the share of
samples on which both reviewers name the same winner (evaluated answer, tie, ground truth).

--reviews_a and --reviews_b are two reviews files, or two folders whose *.json files are
paired by name; samples are paired by id. Unscored or unpaired samples are listed on stderr.
"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse

from mmrole.agreement import agreement_csv_text, agreement_table, format_agreement, paired_scores
from mmrole.schema import REVIEW_KEY, SchemaError, print_problems
from mmrole.store import atomic_write_text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews_a", required=True, help="reviews file or folder of reviewer A (e.g. the RM)")
    parser.add_argument("--reviews_b", required=True, help="reviews file or folder of reviewer B (e.g. GPT-4)")
    parser.add_argument("--key_a", default=REVIEW_KEY, help="review field of A's files (default rm_review)")
    parser.add_argument("--key_b", default=REVIEW_KEY, help="review field of B's files (default rm_review)")
    parser.add_argument("--output", default=None, help="also write the table as CSV here")
    args = parser.parse_args(argv)
    try:
        pairs, problems = paired_scores(args.reviews_a, args.reviews_b, key_a=args.key_a, key_b=args.key_b)
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = agreement_table(pairs)
    print(format_agreement(rows))
    if args.output:
        atomic_write_text(args.output, agreement_csv_text(rows))
    print_problems(problems, "not paired")
    return 0


if __name__ == "__main__":
    sys.exit(main())
