"""Agreement of two reviewers of the same answers (e.g. the reward model vs GPT-4), per metric:
MAE of the ratio evaluated / ground truth, Pearson correlation of the ratios, and the share of
samples on which both reviewers name the same winner (evaluated answer, tie, ground truth).

--reviews_a and --reviews_b are two reviews files, or two folders whose *.json files are
paired by name; samples are paired by id. Unscored or unpaired samples are listed on stderr.

Exit status: 0 done (unpaired and unscored samples are listed); 1 a reviews file cannot be read, or
--output_file cannot be written (named); 2 usage error (e.g. no such file or folder).
"""
import os
import sys

from mmrole.common.cli import EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser, add_hidden_alias, write_error_message
from mmrole.common.problems import print_problems
from mmrole.common.store import atomic_write_text
from mmrole.eval.agreement import agreement_csv_text, agreement_table, format_agreement, paired_scores
from mmrole.eval.files import REVIEW_KEY, SchemaError


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--reviews_a", required=True, help="reviews file or folder of reviewer A (e.g. the RM)")
    parser.add_argument("--reviews_b", required=True, help="reviews file or folder of reviewer B (e.g. GPT-4)")
    parser.add_argument("--key_a", default=REVIEW_KEY, help="review field of A's files (default rm_review)")
    parser.add_argument("--key_b", default=REVIEW_KEY, help="review field of B's files (default rm_review)")
    parser.add_argument("--output_file", default=None, help="also write the table as CSV here")
    add_hidden_alias(parser, "--output", of="--output_file")
    args = parser.parse_args(argv)
    missing = [path for path in (args.reviews_a, args.reviews_b) if not os.path.exists(path)]
    if missing:
        print(f"error: {missing[0]}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        pairs, problems = paired_scores(args.reviews_a, args.reviews_b, key_a=args.key_a, key_b=args.key_b)
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    rows = agreement_table(pairs)
    print(format_agreement(rows))
    print_problems(problems, "not paired")
    if args.output_file:
        try:
            atomic_write_text(args.output_file, agreement_csv_text(rows))
        except OSError as e:
            print(f"error: {write_error_message(e)}", file=sys.stderr)
            return EXIT_UNUSABLE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
