"""Table 5 of the MMRole paper and its charts from per-file result CSVs.

Reads DIR/{in,out}-test_results/<model>/*.csv (as written by RM_result.py) and writes
OUT/table5.csv, OUT/table5.md, OUT/radar.png (one polygon per model over the eight metrics)
and OUT/dimensions.png (bars per metric, one panel per dimension). A model with both splits
also gets `<model> (In-Test)` and `<model> (Out-Test)` rows.

--aggregation paper (default) reproduces the published Table 5 in every cell: a split is the
plain mean of its dialogue-type files, and In-Test weighs 3 : 1 against Out-Test.
--aggregation samples is the mean over all reviewed samples (count-weighted files).
"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse

from mmrole.results import AGGREGATIONS, table_markdown_text, write_report
from mmrole.schema import SchemaError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval_dir", required=True, help="folder holding in-test_results/ and out-test_results/")
    parser.add_argument("--models", nargs="+", required=True, help="model folder names, in table order")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="paper",
                        help="how files and splits are combined (default: as the paper)")
    parser.add_argument("--decimals", type=int, default=3, help="decimals in table5.csv/.md (paper: 3)")
    args = parser.parse_args(argv)
    try:
        rows = write_report(args.eval_dir, args.models, args.output_dir,
                            aggregation=args.aggregation, decimals=args.decimals)
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table_markdown_text(rows, args.decimals), end="")
    print(f"wrote table5.csv, table5.md, radar.png, dimensions.png to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
