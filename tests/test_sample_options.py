"""--stop, cycled temperatures, --repetition-penalty and --interactive on a real tiny model."""

import os
import subprocess
import sys

from helpers import run_cli


def test_stop_ends_each_sample_at_its_first_stop_sequence(char_model, capsys):
    args = ["sample", char_model, "--length", "200", "--seed", "4", "--num-samples", "3"]
    code, full, _ = run_cli(args, capsys)
    code, stopped, _ = run_cli([*args, "--stop", "e", "--stop", "\\n"], capsys)
    assert code == 0
    full_samples = full.split("=== sample ")[1:]
    stopped_samples = stopped.split("=== sample ")[1:]
    for whole, cut in zip(full_samples, stopped_samples, strict=True):
        body, cut_body = whole.split("\n", 1)[1], cut.split("\n", 1)[1]
        ends = [i for i in (body.find("e"), body.find("\n")) if i >= 0]
        assert cut_body.rstrip("\n") == body[:min(ends)]


def test_a_temperature_list_is_cycled_token_by_token(char_model, capsys):
    base = ["sample", char_model, "--length", "60", "--seed", "1"]
    cold = run_cli([*base, "--temperature", "0"], capsys)[1]
    assert run_cli([*base, "--temperature", "0,0,0"], capsys)[1] == cold
    mixed = run_cli([*base, "--temperature", "0,5"], capsys)[1]
    assert mixed != cold and mixed[0] == cold[0]  # the first token is drawn at temperature 0


def test_repetition_penalty_changes_the_text(word_model, capsys):
    base = ["sample", word_model, "--length", "40", "--seed", "1", "--temperature", "0"]
    assert run_cli([*base, "--repetition-penalty", "3"], capsys)[1] != run_cli(base, capsys)[1]


def test_interactive_session_through_stdin(char_model):
    script = "ROMEO:\n:temp 0\n:length 20\n:nonsense\nROMEO:\n:settings\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "textgen", "sample", str(char_model), "-i",
                             "--seed", "1", "--length", "30"], input=script, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("> ROMEO:") == 2
    assert "temperature 0, " in out and "length 20," in out
    assert "error: unknown command :nonsense" in out
    first, second = (part.split("\n\n")[0] for part in out.split("> ROMEO:")[1:3])
    assert len(second) <= len(first) + 1 and len(first) > 10


def test_ctrl_c_at_the_interactive_prompt_ends_cleanly(char_model):
    import signal
    import time

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "textgen", "sample", str(char_model), "-i"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.time() + 120
    seen = ""
    while "> " not in seen and time.time() < deadline:
        seen += proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err
