"""`python app.py`: usage errors are one line and exit 2 before anything starts; the app serves on 127.0.0.1, and
stops with 0 on SIGTERM; the command demo.sh prints at its end is one app.py accepts."""

import re
import shlex
import signal
import subprocess
import sys
import urllib.request

import pytest

from mmrole.app.cli import main, parse_args, usage_problem


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to show: give --profiles"),
    (["--eval_dir", "{ref}", "--model_path", "{ref}", "--base_url", "http://127.0.0.1:9/v1"], "give one"),
    (["--eval_dir", "{ref}", "--base_url", "http://127.0.0.1:9/v1"], "--base_url needs --model"),
    (["--eval_dir", "{ref}", "--model", "m"], "--model names a model of an endpoint"),
    (["--eval_dir", "{ref}/no-such-folder"], "no-such-folder: no such file or folder"),
    (["--profiles", "{ref}"], "no profiles here"),
])
def test_usage_errors_exit_2_with_one_line(mmrole_reference, capsys, argv, message):
    argv = [a.replace("{ref}", str(mmrole_reference)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_command_demo_sh_prints_is_accepted(repo_root, tmp_path):
    line = (repo_root / "demo.sh").read_text().rstrip().splitlines()[-1]
    assert line.startswith('echo "') and "app.py" in line
    variables = {"PYTHON": "python", "DATA": str(tmp_path / "MMRole-Data"), "OUT": str(tmp_path),
                 "IMAGES": str(tmp_path / "MMRole-Data" / "images")}
    command = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], line.split("app.py", 1)[1].rstrip('"'))
    args = parse_args(shlex.split(command))
    for folder in ("MMRole-Data/profiles", "MMRole-Data/images", "checkpoints/demo-agent", "eval"):
        (tmp_path / folder).mkdir(parents=True)
    assert usage_problem(args) is None
    assert (args.profiles, args.eval_dir, args.no_random) == (variables["DATA"] + "/profiles", f"{tmp_path}/eval", True)


@pytest.mark.slow
def test_the_app_serves_on_this_machine_and_stops_on_sigterm(repo_root, mmrole_reference):
    process = subprocess.Popen([sys.executable, "app.py", "--eval_dir", str(mmrole_reference), "--port", "0"],
                               cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"MMRole app at (http://127\.0\.0\.1:\d+/) \(this machine only\)\n", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        page = urllib.request.urlopen(match.group(1) + "?tab=eval", timeout=30).read().decode()
        assert '"title":"MMRole"' in page.replace(" ", "") and "Evaluation browser" in page
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
