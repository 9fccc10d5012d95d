"""Per reviews file, one result CSV: the number of reviewed samples and, per metric, the mean
ratio of the evaluated answer's score to the ground truth's score (the published CSV format).

Samples without a review because their answer is empty are the original's deliberate skip: listed
on stderr, not counted. Everything else that keeps a review out of the means (no review, no valid
score pair, a score outside 0..10, a second record with the same sample id) makes the file
incomplete: listed with file and sample id, and its CSV gets a `missing_reviews` column (complete
files keep the published format). --strict counts every sample, each missing review as a ratio of 0.

Exit status: 0 every file complete; 1 a file could not be read (named; it gets no CSV, the others are
scored); 2 usage error or nothing to do (no such folder or file, no *.json in it); 3 a file is
incomplete (its CSV is written, and marked) unless --partial accepts partial results.
"""
import sys

from mmrole.common.cli import EXIT_INCOMPLETE, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser, worst_status


def main(argv=None) -> int:
    from mmrole.common.cli import claim_output_folder_or_say_why, write_error_message
    from mmrole.eval.files import input_files
    from mmrole.eval.results import write_result_csvs
    from mmrole.eval.files import SchemaError
    from mmrole.common.problems import print_problems

    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--input_dir", default="eval/mini_reviews/mmrole-agent", help="folder of reviews files (*.json)")
    parser.add_argument("--input_file", default=None, help="only this file of --input_dir")
    parser.add_argument("--output_dir", default="eval/mini_results/mmrole-agent", help="where <name>.csv goes")
    parser.add_argument("--strict", action="store_true",
                        help="count every sample; a missing or failed review contributes a ratio of 0")
    parser.add_argument("--partial", action="store_true",
                        help="accept incomplete files: exit 0 (their CSVs are still marked with missing_reviews)")
    args = parser.parse_args(argv)
    try:
        input_files(args.input_dir, args.input_file)
    except SchemaError as e:  # no such folder or file, or nothing in it: nothing to do
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    folder = claim_output_folder_or_say_why(args.output_dir)
    if folder is None:
        return EXIT_UNUSABLE
    for note in folder.notes:
        print(note, file=sys.stderr)
    try:
        results, unusable = write_result_csvs(args.input_dir, args.output_dir, args.input_file, strict=args.strict)
    except OSError as e:
        print(f"error: {write_error_message(e)}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        folder.release()
    for result in results:
        print(f"{result.name}: count {result.count}" + ("" if result.complete else f"; INCOMPLETE: {result.incompleteness()}"))
        deliberate = [p for p in result.problems if p.deliberate]
        print_problems(deliberate, f"{result.name}: left out (empty answers, as the original)")
        print_problems([p for p in result.problems if not p.deliberate],
                       f"{result.name}: not scored" + (" (ratio 0)" if args.strict else ""))
    print_problems(unusable, "error: unusable files (no CSV written)")
    incomplete = [r for r in results if not r.complete]
    if incomplete:
        print(f"{'warning' if args.partial else 'error'}: {len(incomplete)} incomplete file(s), marked in their CSV "
              f"(missing_reviews): {', '.join(r.name for r in incomplete)}; rerun the review to complete them"
              + ("" if args.partial else ", or pass --partial to accept partial results"), file=sys.stderr)
    return worst_status(EXIT_UNUSABLE if unusable else 0,
                        EXIT_INCOMPLETE if incomplete and not args.partial else 0)


if __name__ == "__main__":
    sys.exit(main())
