"""Quality control of raw MMRole-Data dialogues, with explicit rules and a report.

Reads DATA_ROOT/dialogues (both splits when present) with the characters of
DATA_ROOT/profiles/<split>/{roles,profiles}.json, and writes to OUTPUT_DIR:
  dialogues/...          the kept records, in the same raw layout (give OUTPUT_DIR to
                         build_data.py --dialogues_root to build from the filtered data)
  rejects.jsonl          one line per rejected record: file, id, every rule that fired with details
  filter_report.json     counts per rule, per split and type (also printed)

Rules (all documented in mmrole/data/filter.py): structure (empty or truncated records, wrong
speaker order, unknown speakers, a character talking with itself, missing profiles, duplicate ids),
text (a turn cut mid-sentence, wrong language, AI-assistant phrases such as "as an AI" or
"I'm sorry, but", speaker labels inside a turn, turn length bounds), dialogue (turn count bounds,
duplicates of an earlier record, a turn repeated within a dialogue).

Exit status: 0 filtered (rejected records are listed in rejects.jsonl: rejecting them is this script's
job); 1 a file could not be used (a dialogue file that is not valid JSON, a damaged roles.json or
profiles.json, the output folder): named; 2 usage error (bad flags, no such --data_root).
"""
import os
import sys

from mmrole.common.cli import EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data_root", required=True, help="raw MMRole-Data folder (profiles/, dialogues/)")
    parser.add_argument("--output_dir", required=True, help="where filtered dialogues, rejects and the report go")
    parser.add_argument("--types", nargs="+", default=["comment", "human-role", "inter-role"],
                        choices=["comment", "human-role", "inter-role"], help="dialogue types to filter (default all)")
    parser.add_argument("--min_cjk_share_zh", type=float, default=0.4,
                        help="Chinese-speaking characters: least share of CJK among letters per turn (default 0.4)")
    parser.add_argument("--max_cjk_share_en", type=float, default=0.2,
                        help="English-speaking characters: largest share of CJK among letters per turn (default 0.2)")
    parser.add_argument("--turn_chars_en", type=int, nargs=2, default=[4, 4000], metavar=("MIN", "MAX"),
                        help="length bounds of an English turn in characters (default 4 4000)")
    parser.add_argument("--turn_chars_zh", type=int, nargs=2, default=[4, 1500], metavar=("MIN", "MAX"),
                        help="length bounds of a Chinese turn in characters (default 4 1500)")
    parser.add_argument("--dialogue_turns", type=int, nargs=2, default=[4, 40], metavar=("MIN", "MAX"),
                        help="turn count bounds of human-role and inter-role dialogues (default 4 40)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from mmrole.data.filter import WHOLE_FILE, FilterConfig, run_filter
    from mmrole.data.raw import RawDataError

    from mmrole.common.cli import WRITE_ERRNOS, claim_output_folder_or_say_why, write_error_message

    args = parse_args(argv)
    if not os.path.isdir(args.data_root) or not any(os.scandir(args.data_root)):
        print(f"error: --data_root {args.data_root}: no such folder, or an empty one: nothing to do", file=sys.stderr)
        return EXIT_USAGE
    config = FilterConfig(
        min_cjk_share_zh=args.min_cjk_share_zh, max_cjk_share_en=args.max_cjk_share_en,
        turn_chars_en=tuple(args.turn_chars_en), turn_chars_zh=tuple(args.turn_chars_zh),
    ).with_multi_turn_bounds(*args.dialogue_turns)
    folder = claim_output_folder_or_say_why(args.output_dir, [(os.path.join(args.output_dir, "dialogues"), True)])
    if folder is None:
        return EXIT_UNUSABLE
    for note in folder.notes:
        print(note, file=sys.stderr)
    try:
        report, verdicts = run_filter(args.data_root, args.output_dir, config, args.types)
    except RawDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as e:
        print(f"error: {write_error_message(e) if e.errno in WRITE_ERRNOS else e}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        folder.release()
    shown = {}
    for verdict in verdicts:  # two examples per rule, so the console says what was found
        for rule, detail in verdict.reasons:
            if shown.get(rule, 0) < 2:
                shown[rule] = shown.get(rule, 0) + 1
                print(f"  rejected ({rule}): {verdict.path}: {verdict.id}: {detail}")
    for line in report.lines():
        print(line)
    print(f"rejects: {os.path.join(args.output_dir, 'rejects.jsonl')}")
    unreadable = [v for v in verdicts if v.id == WHOLE_FILE]
    for verdict in unreadable:
        print(f"error: file not used: {verdict.path}: {'; '.join(d for _, d in verdict.reasons)}", file=sys.stderr)
    return EXIT_UNUSABLE if unreadable else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
