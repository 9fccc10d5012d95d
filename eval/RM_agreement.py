"""Agreement of two reviewers of the same answers (e.g. the reward model vs GPT-4), per metric: MAE of the ratio
evaluated / ground truth, the Pearson, Spearman and Kendall correlations of the ratios, and the share of samples
on which both reviewers name the same winner (evaluated answer, tie, ground truth); each with a 95% bootstrap
interval (the samples resampled, a sample with all its metrics and both reviewers' scores).

--reviews_a and --reviews_b are two reviews files, or two folders whose *.json files are paired by name; samples
are paired by id. With --models M1 M2 ..., they are folders holding one folder per model (e.g. eval/in-test_reviews
and another judge's copy of it): the per-metric rows pool the models' samples, and a system-level table says
whether the two reviewers rank the models alike: each model's score under A and under B (per metric and Overall,
its files weighed alike) and their correlations across the models, with intervals (samples resampled within each
file of each model). Unscored or unpaired samples are listed on stderr.

Exit status: 0 done (unpaired and unscored samples are listed); 1 a reviews file cannot be read, or
--output_file cannot be written (named); 2 usage error (e.g. no such file or folder).
"""
import os
import sys

from mmrole.common.cli import (EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser, add_hidden_alias, float_above,
                               int_at_least, write_error_message)
from mmrole.common.problems import print_problems
from mmrole.common.store import atomic_write_text
from mmrole.eval.agreement import (AGREEMENT_RESAMPLES, agreement_csv_text, agreement_table, format_agreement,
                                   format_system_agreement, paired_samples, system_agreement)
from mmrole.eval.files import REVIEW_KEY, SchemaError
from mmrole.eval.stats import METHODS, IntervalSettings


def _parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--reviews_a", required=True, help="reviews file or folder of reviewer A (e.g. the RM)")
    parser.add_argument("--reviews_b", required=True, help="reviews file or folder of reviewer B (e.g. GPT-4)")
    parser.add_argument("--key_a", default=REVIEW_KEY, help="review field of A's files (default rm_review)")
    parser.add_argument("--key_b", default=REVIEW_KEY, help="review field of B's files (default rm_review)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="folders of --reviews_a/--reviews_b, one per model: adds the system-level agreement")
    parser.add_argument("--output_file", default=None, help="also write the table(s) as CSV here")
    add_hidden_alias(parser, "--output", of="--output_file")
    parser.add_argument("--no_intervals", action="store_true", help="the figures without bootstrap intervals")
    parser.add_argument("--confidence", type=float_above(0.0), default=0.95, help="of the intervals (default 0.95)")
    parser.add_argument("--n_resamples", type=int_at_least(1), default=AGREEMENT_RESAMPLES,
                        help=f"bootstrap resamples (default {AGREEMENT_RESAMPLES})")
    parser.add_argument("--ci_method", choices=METHODS, default="percentile",
                        help="scipy.stats.bootstrap's interval method (default percentile)")
    parser.add_argument("--seed", type=int, default=0, help="of the resampling (default 0)")
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.confidence >= 1:
        parser.error("--confidence must lie between 0 and 1 (e.g. 0.95)")
    folders = [os.path.join(path, model) for model in args.models or [] for path in (args.reviews_a, args.reviews_b)]
    missing = [path for path in [args.reviews_a, args.reviews_b, *folders] if not os.path.exists(path)]
    if missing:
        print(f"error: {missing[0]}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    settings = None if args.no_intervals else IntervalSettings(args.confidence, args.n_resamples, args.ci_method,
                                                                args.seed)
    sources = ([(os.path.join(args.reviews_a, m), os.path.join(args.reviews_b, m)) for m in args.models]
               if args.models else [(args.reviews_a, args.reviews_b)])
    by_model, problems = {}, []
    try:
        for model, (a, b) in zip(args.models or [None], sources):
            paired, found = paired_samples(a, b, key_a=args.key_a, key_b=args.key_b)
            by_model[model] = paired
            problems += found
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    samples = [s for paired in by_model.values() for file_samples in paired.values() for s in file_samples]
    rows = agreement_table(samples, settings)
    print(format_agreement(rows))
    system = system_agreement(by_model, settings) if args.models and len(args.models) > 1 else []
    if system:
        print("\nSystem level: each model's score under A / B, and their correlations across the models")
        print(format_system_agreement(system))
    print_problems(problems, "not paired")
    if args.output_file:
        try:
            atomic_write_text(args.output_file, agreement_csv_text(rows, system))
        except OSError as e:
            print(f"error: {write_error_message(e)}", file=sys.stderr)
            return EXIT_UNUSABLE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
