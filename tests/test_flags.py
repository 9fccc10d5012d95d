"""One vocabulary for flags across the scripts: one spelling per concept (--image_dir, --check_images /
--no_check_images, --output_dir / --output_file, --max_new_tokens, --batch_size); the spellings scripts had before
still work, set the same value, and stay out of --help."""

import argparse
import re

import pytest

from tests.support.scripts import load_script

OLD_SPELLINGS = ("--image_root", "--no_image_check", "--output", "--json", "--max_tokens", "--max_tokens_limit",
                 "--max_batch_size")


class Parsed(Exception):
    """Raised by the spy below: the parser a script built and what it parsed, without running the script."""


@pytest.fixture
def parse(monkeypatch):
    """parse(main, argv) -> (parser, namespace) of the first parse the script's main makes."""
    original = argparse.ArgumentParser.parse_known_args

    def spy(self, args=None, namespace=None):
        namespace, _ = original(self, args, namespace)
        raise Parsed(self, namespace)

    def run(main, argv):
        monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", spy)
        try:
            with pytest.raises(Parsed) as parsed:
                main(argv)
        finally:
            monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", original)
        return parsed.value.args

    return run


def _main(script):
    if script.startswith("mmrole."):
        import importlib

        return importlib.import_module(script).main
    return load_script(script).main


# (script, the arguments it requires, the canonical flag and its value, the old spelling, the parsed attribute)
ALIASES = [
    ("data_prep/build_data.py", ["--data_root", "r", "--output_dir", "o"], ["--image_dir", "imgs"], "--image_root",
     "image_dir"),
    ("eval/RM_agreement.py", ["--reviews_a", "a", "--reviews_b", "b"], ["--output_file", "t.csv"], "--output",
     "output_file"),
    ("data_prep/gen_dialogues.py", ["--data_root", "r", "--model", "m"], ["--max_new_tokens", "7"], "--max_tokens",
     "max_new_tokens"),
    ("data_prep/gen_profiles.py", ["--data_root", "r", "--model", "m"], ["--max_new_tokens", "7"], "--max_tokens",
     "max_new_tokens"),
    ("mmrole.serve.server", ["--model_path", "m"], ["--batch_size", "4"], "--max_batch_size", "batch_size"),
    ("mmrole.serve.server", ["--model_path", "m"], ["--max_new_tokens_limit", "9"], "--max_tokens_limit",
     "max_new_tokens_limit"),
    ("mmrole.demo.summary", ["--eval_dir", "e", "--report_dir", "r", "--models", "m"], ["--output_file", "s.json"],
     "--json", "output_file"),
    ("bench/serve_load.py", [], ["--batch_size", "4"], "--max_batch_size", "batch_size"),
    ("bench/serve_load.py", [], ["--max_new_tokens", "5"], "--max_tokens", "max_new_tokens"),
    ("finetune/finetune.py", ["--data_path", "d.json"], ["--image_dir", "imgs"], "--image_root", "image_dir"),
]


@pytest.mark.parametrize("script, required, canonical, old, attribute", ALIASES,
                         ids=[f"{a[0]} {a[3]}" for a in ALIASES])
def test_an_old_spelling_sets_what_the_canonical_flag_sets(parse, script, required, canonical, old, attribute):
    parser, by_canonical = parse(_main(script), [*required, *canonical])
    _, by_old = parse(_main(script), [*required, old, canonical[1]])
    _, by_neither = parse(_main(script), required)
    assert getattr(by_old, attribute) == getattr(by_canonical, attribute) != getattr(by_neither, attribute)
    shown = parser.format_help()
    assert canonical[0] in shown
    if script == "finetune/finetune.py":  # transformers' parser lists an alias beside its flag, and the help says so
        assert f"{old} IMAGE_DIR" in shown and "earlier spelling" in shown
    else:
        assert old not in shown.replace(canonical[0], "")


@pytest.mark.parametrize("script, required, default", [
    ("data_prep/build_data.py", ["--data_root", "r", "--output_dir", "o"], False),
    ("eval/build_RM_data.py", ["--input_dir", "i", "--output_file", "o.json"], True),
])
def test_check_images_is_one_flag_both_ways_with_each_scripts_default(parse, script, required, default):
    main = _main(script)
    assert parse(main, required)[1].check_images is default
    assert parse(main, [*required, "--check_images"])[1].check_images is True
    assert parse(main, [*required, "--no_check_images"])[1].check_images is False
    if script == "eval/build_RM_data.py":
        assert parse(main, [*required, "--no_image_check"])[1].check_images is False


SCRIPTS = ("inference.py", "eval/GPT_review.py", "eval/RM_review.py", "eval/RM_result.py", "eval/report.py",
           "eval/build_RM_data.py", "eval/RM_agreement.py", "data_prep/build_data.py", "data_prep/filter_dialogues.py",
           "data_prep/gen_profiles.py", "data_prep/gen_dialogues.py", "finetune/merge_lora.py", "mmrole.serve.server",
           "mmrole.demo.tiny", "mmrole.demo.data", "mmrole.demo.judge", "mmrole.demo.summary", "bench/serve_load.py",
           "bench/rm_review_throughput.py", "bench/train_throughput.py", "bench/inference_throughput.py",
           "bench/full_eval.py", "app.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_help_offers_an_old_spelling(script, capsys):
    with pytest.raises(SystemExit) as exit_:
        _main(script)(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage:")
    offered = set(re.findall(r"--[A-Za-z0-9_-]+", shown)) & set(OLD_SPELLINGS)
    assert not offered, f"{script} --help offers {sorted(offered)}"
