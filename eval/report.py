"""Table 5 of the MMRole paper and its charts from per-file result CSVs.

Reads DIR/{in,out}-test_results/<model>/*.csv (as written by RM_result.py) and writes
OUT/table5.csv, OUT/table5.md, OUT/radar.png (one polygon per model over the eight metrics)
and OUT/dimensions.png (bars per metric, one panel per dimension). A model with both splits
also gets `<model> (In-Test)` and `<model> (Out-Test)` rows.

--aggregation paper (default) reproduces the published Table 5 in every cell: a split is the
plain mean of its dialogue-type files, and In-Test weighs 3 : 1 against Out-Test.
--aggregation samples is the mean over all reviewed samples (count-weighted files).

A row built from an incomplete result (a CSV that RM_result marked with missing_reviews, or a score
that is nan) is never shown as complete: the tables get an `incomplete` column naming the files, the
charts' legend says "(incomplete)", and the exit status is 3 unless --partial accepts it.
Exit status: 0 done; 1 a result CSV cannot be read (named); 2 usage error (e.g. a model without any
result CSV); 3 incomplete results (see above).
"""
import sys

from mmrole.common.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser, int_at_least


def main(argv=None) -> int:
    from mmrole.common.cli import folder_error_text, write_error_message
    from mmrole.eval.report import AGGREGATIONS, NoResults, row_is_incomplete, table_markdown_text, write_report
    from mmrole.eval.files import SchemaError
    from mmrole.common.store import FolderBusy, claim_output_folder

    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--eval_dir", required=True, help="folder holding in-test_results/ and out-test_results/")
    parser.add_argument("--models", nargs="+", required=True, help="model folder names, in table order")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="paper",
                        help="how files and splits are combined (default: as the paper)")
    parser.add_argument("--decimals", type=int_at_least(0), default=3, help="decimals in table5.csv/.md (paper: 3)")
    parser.add_argument("--partial", action="store_true",
                        help="accept rows built from incomplete results: exit 0 (they are still marked)")
    args = parser.parse_args(argv)
    try:
        folder = claim_output_folder(args.output_dir)
    except (FolderBusy, OSError) as e:
        print(f"error: output folder {args.output_dir}: {folder_error_text(e)}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        rows = write_report(args.eval_dir, args.models, args.output_dir,
                            aggregation=args.aggregation, decimals=args.decimals)
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
    print(table_markdown_text(rows, args.decimals), end="")
    print(f"wrote table5.csv, table5.md, radar.png, dimensions.png to {args.output_dir}")
    incomplete = [row.label for row in rows if row_is_incomplete(row)]
    if not incomplete:
        return EXIT_OK
    print(f"{'warning' if args.partial else 'error'}: {len(incomplete)} row(s) built from incomplete results "
          f"(see the `incomplete` column): {', '.join(incomplete)}"
          + ("" if args.partial else "; complete the reviews, or pass --partial to accept partial results"),
          file=sys.stderr)
    return EXIT_OK if args.partial else EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
