"""Table 5 of the MMRole paper with bootstrap intervals, paired comparisons of the models, a ranking, a judge
audit, and charts, from per-file result CSVs and the reviews behind them.

Reads DIR/{in,out}-test_results/<model>/*.csv (as written by RM_result.py) and, for the statistics,
DIR/{in,out}-test_reviews/<model>/*.json. Writes to OUT:
  table5.csv, table5.md, table5.json   Table 5; a model with both splits also gets `<model> (In-Test)` and
                                       `<model> (Out-Test)` rows. Every cell is the CSVs' number; beside it, its
                                       95% bootstrap interval: table5.md `0.994 [0.982, 1.006]`, table5.csv the
                                       columns <column>_low, <column>_high.
  radar.png, dimensions.png            one polygon / group of bars per model, intervals drawn on them
  comparisons.csv, ranking.md          (two models or more) every pair compared on the samples both have: A - B
                                       per column with its paired interval, wins/ties/losses, a permutation and a
                                       sign test; the ranking, where models that no paired interval separates
                                       share a rank
  audit.md, audit.csv, audit.json      the judge: parse failures, position bias (reviews asked with --swap),
                                       length bias, by dialogue type and character

--aggregation paper (default) reproduces the published Table 5 in every cell: a split is the plain mean of its
dialogue-type files, and In-Test weighs 3 : 1 against Out-Test. --aggregation samples is the mean over all
reviewed samples (count-weighted files). The intervals, comparisons and ranking follow the same aggregation.

Intervals resample the samples of each results file with replacement (a sample keeps its eight metric scores),
seeded (--seed): the same files and flags give the same numbers. A row whose files have no reviews beside them
(e.g. the published Out-Test results) gets no interval, and the table says why. --compare A B also prints the
two models' comparison metric by metric (and writes compare_A_vs_B.md).

A row built from an incomplete result (a CSV that RM_result marked with missing_reviews, or a score that is nan)
is never shown as complete: the tables get an `incomplete` column naming the files, the charts' legend says
"(incomplete)", and the exit status is 3 unless --partial accepts it.
Exit status: 0 done; 1 a result CSV or a reviews file cannot be read (named); 2 usage error (e.g. a model without
any result CSV, --compare naming a model not in --models); 3 incomplete results (see above).
"""
import sys

from mmrole.common.cli import (EXIT_INCOMPLETE, EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser, float_above,
                               int_at_least)


def _parser() -> ArgumentParser:
    from mmrole.eval.report import AGGREGATIONS
    from mmrole.eval.stats import METHODS

    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--eval_dir", required=True, help="folder holding in-test_results/ and out-test_results/ "
                                                          "(and the *-test_reviews/ behind them, for the statistics)")
    parser.add_argument("--models", nargs="+", required=True, help="model folder names, in table order")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="paper",
                        help="how files and splits are combined (default: as the paper)")
    parser.add_argument("--decimals", type=int_at_least(0), default=3, help="decimals in table5.csv/.md (paper: 3)")
    parser.add_argument("--partial", action="store_true",
                        help="accept rows built from incomplete results: exit 0 (they are still marked)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="print the paired comparison of these two of --models, metric by metric")
    parser.add_argument("--no_intervals", action="store_true",
                        help="no bootstrap: Table 5 without intervals, no comparisons or ranking (the audit stays)")
    parser.add_argument("--confidence", type=float_above(0.0), default=0.95, help="of the intervals (default 0.95)")
    parser.add_argument("--n_resamples", type=int_at_least(1), default=9999,
                        help="bootstrap resamples and permutation-test sign flips (default 9999)")
    parser.add_argument("--ci_method", choices=METHODS, default="percentile",
                        help="scipy.stats.bootstrap's interval method (default percentile)")
    parser.add_argument("--seed", type=int, default=0, help="of the resampling (default 0)")
    return parser


def _print_outcome(report, args) -> None:
    from mmrole.eval.compare import comparison_markdown, find_comparison
    from mmrole.eval.report import table_markdown_text

    print(table_markdown_text(report.table.rows, args.decimals, report.table.intervals), end="")
    written = ["table5.csv", "table5.md", "table5.json", "radar.png", "dimensions.png"]
    if report.comparisons:
        written += ["comparisons.csv", "ranking.md"]
    if report.audits:
        written += ["audit.md", "audit.csv", "audit.json"]
    if args.compare:
        pair = find_comparison(report.comparisons, *args.compare)
        print("\n" + comparison_markdown(pair, args.confidence), end="")
        written.append(f"compare_{pair.model_a}_vs_{pair.model_b}.md")
    print(f"wrote {', '.join(written)} to {args.output_dir}")


def main(argv=None) -> int:
    from pathlib import Path

    from mmrole.common.cli import claim_output_folder_or_say_why, write_error_message
    from mmrole.common.store import atomic_write_text
    from mmrole.eval.compare import comparison_markdown, find_comparison
    from mmrole.eval.files import SchemaError
    from mmrole.eval.report import NoResults, row_is_incomplete, write_report
    from mmrole.eval.stats import IntervalSettings

    parser = _parser()
    args = parser.parse_args(argv)
    if args.confidence >= 1:
        parser.error("--confidence must lie between 0 and 1 (e.g. 0.95)")
    if args.compare and (args.compare[0] == args.compare[1] or not set(args.compare) <= set(args.models)):
        parser.error("--compare needs two different models of --models")
    if args.compare and args.no_intervals:
        parser.error("--compare needs the bootstrap: drop --no_intervals")
    settings = None if args.no_intervals else IntervalSettings(args.confidence, args.n_resamples, args.ci_method,
                                                                args.seed)
    folder = claim_output_folder_or_say_why(args.output_dir)
    if folder is None:
        return EXIT_UNUSABLE
    try:
        report = write_report(args.eval_dir, args.models, args.output_dir, aggregation=args.aggregation,
                              decimals=args.decimals, intervals=settings)
        if args.compare:
            pair = find_comparison(report.comparisons, *args.compare)
            atomic_write_text(Path(args.output_dir) / f"compare_{pair.model_a}_vs_{pair.model_b}.md",
                              comparison_markdown(pair, args.confidence))
    except NoResults as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as e:
        print(f"error: {write_error_message(e)}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        folder.release()
    _print_outcome(report, args)
    incomplete = [row.label for row in report.table.rows if row_is_incomplete(row)]
    if not incomplete:
        return EXIT_OK
    print(f"{'warning' if args.partial else 'error'}: {len(incomplete)} row(s) built from incomplete results "
          f"(see the `incomplete` column): {', '.join(incomplete)}"
          + ("" if args.partial else "; complete the reviews, or pass --partial to accept partial results"),
          file=sys.stderr)
    return EXIT_OK if args.partial else EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
