"""Export MMRole-Data for the established fine-tuning stacks: transformers/TRL and LLaMA-Factory.

    python data_prep/export.py --input_file data/train/train.json --image_dir /data/MMRole-Data \
        --output_dir data/export [--format messages sharegpt]

Input: files this project writes (JSON list or JSON lines): build_data.py's train.json and build_RM_data.py's
reward-model data (Qwen-VL's fine-tuning format, `Picture 1: <img>PATH</img>` in the user turn), or test files
of the published schema (--input_dir data/test/in-distribution). The system prompt and the prompt text are copied
byte for byte (a user turn that does not turn back into the same bytes is reported, not exported). Images are
referenced, not copied: --image_dir is joined in front of each image path (train.json's paths start with images/,
so give the MMRole-Data folder; for test files its images/ folder). Give an absolute path: TRL opens the paths
from the working directory, LLaMA-Factory from its dataset folder.

Output, per input file X.json, in --output_dir:
  X.messages.jsonl   {id, messages: [system, user [image, text], assistant], images: [path]} for transformers'
                     chat templates and TRL's SFTTrainer (vision-language models)
  X.sharegpt.jsonl   LLaMA-Factory's multimodal ShareGPT: {id, conversations: [{from: human, value: "<image>..."},
                     {from: gpt, value}], system, images: [path]}
  dataset_info.json  the LLaMA-Factory entry `mmrole_X` of each sharegpt file (existing entries are kept)

Bad records (not an object, no assistant turn, a user turn that is not Qwen-VL's list format, a text holding
`<image>` in the sharegpt format, a sample id used twice, with --check_images a missing or damaged image) are
listed with file and sample id and left out. Image files are not needed: missing ones are counted (the MMRole-Data
snapshot ships no MS-COCO images) unless --check_images skips their records. Outputs are written atomically; a
rerun writes them again (an export of the full train.json takes seconds).

Exit status: 0 every record exported; 1 an input file could not be read (named; the other files are exported),
or the output folder or dataset_info.json could not be used; 2 usage error (bad flags, no input); 3 records
left out (listed).
"""
import sys
from pathlib import Path

from mmrole.common.cli import (EXIT_INCOMPLETE, EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser,
                               add_check_images_arguments)


def parse_args(argv=None):
    from mmrole.data.export import FORMATS

    parser = ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input_file", nargs="+", help="files to export (train.json, reward-model data, test files)")
    source.add_argument("--input_dir", help="export every *.json of this folder (e.g. data/test/in-distribution)")
    parser.add_argument("--output_dir", required=True, help="where the exports and dataset_info.json are written")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS),
                        help="messages (transformers / TRL), sharegpt (LLaMA-Factory); default both")
    parser.add_argument("--image_dir", default=None,
                        help="joined in front of every image path (default: the paths as the records have them)")
    parser.add_argument("--dataset_name", default=None,
                        help="name of the dataset_info.json entry (default mmrole_<file stem>; one input file only)")
    add_check_images_arguments(parser, default=False,
                               checked="leave out (and list) records whose image file is missing or damaged",
                               unchecked="keep records whose image file is missing (they are counted)")
    args = parser.parse_args(argv)
    if args.dataset_name and (args.input_dir or len(args.input_file) > 1):
        parser.error("--dataset_name names one file's entry: give one --input_file")
    return args


def _inputs(args):
    if args.input_dir:
        folder = Path(args.input_dir)
        return sorted(p for p in folder.glob("*.json") if p.name != "dataset_info.json") if folder.is_dir() else []
    return [Path(name) for name in args.input_file]


def main(argv=None) -> int:
    from mmrole.common.cli import claim_output_folder_or_say_why, worst_status
    from mmrole.common.problems import print_problems
    from mmrole.common.records import DataFileError
    from mmrole.data.export import dataset_info_entry, export_file, update_dataset_info

    args = parse_args(argv)
    inputs = _inputs(args)
    missing = [str(path) for path in inputs if not path.is_file()]
    if not inputs or missing:
        print(f"error: no input: {', '.join(missing) or args.input_dir + ' holds no *.json'}", file=sys.stderr)
        return EXIT_USAGE
    folder = claim_output_folder_or_say_why(args.output_dir)
    if folder is None:
        return EXIT_UNUSABLE
    statuses, entries = [], {}
    try:
        for path in inputs:
            try:
                summary = export_file(path, args.output_dir, args.format, args.image_dir, args.check_images)
            except DataFileError as e:
                print(f"error: file not exported: {e}", file=sys.stderr)
                statuses.append(EXIT_UNUSABLE)
                continue
            _print_summary(summary, print_problems)
            statuses.append(EXIT_INCOMPLETE if summary.skipped else EXIT_OK)
            if "sharegpt" in summary.outputs:
                name = args.dataset_name or f"mmrole_{path.stem}"
                entries[name] = dataset_info_entry(Path(summary.outputs["sharegpt"]).name)
        if entries:
            try:
                info = update_dataset_info(args.output_dir, entries)
                print(f"LLaMA-Factory: {info} names {', '.join(sorted(entries))} (dataset_dir: {args.output_dir})")
            except (OSError, ValueError) as e:
                print(f"error: {e}", file=sys.stderr)
                statuses.append(EXIT_UNUSABLE)
    finally:
        folder.release()
    return worst_status(*statuses)


def _print_summary(summary, print_problems) -> None:
    outputs = ", ".join(summary.outputs.values())
    print(f"{summary.input_path}: {summary.exported}/{summary.records} records exported -> {outputs}")
    if summary.missing_images:
        examples = ", ".join(sorted(summary.missing_images)[:3])
        print(f"  {len(summary.missing_images)} image file(s) not found (kept; --check_images leaves their records "
              f"out), e.g. {examples}")
    print_problems(summary.skipped, "  left out", sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
