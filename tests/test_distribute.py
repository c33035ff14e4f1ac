"""tf.distribute on a CPU: mirrored over logical CPU devices, and two real worker processes.

Both need a fresh process (logical devices and collective ops are set up before TensorFlow
starts), so they run `python -m textgen` as a user would; single-process references run in-process.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TINY, run_cli

# a constant rate: the two-worker run is split by --max-steps, which shapes the default schedule
COMMON = [*TINY, "--steps-per-epoch", "5", "--epochs", "3", "--seed", "3", "--lr", "0.01",
          "--lr-schedule", "constant"]
TIMEOUT = 180


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def textgen_process(args: list, log: Path, **env: str) -> subprocess.Popen:
    """`python -m textgen ARGS` with its output in a file (two workers must not block on pipes)."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "textgen", *map(str, args)], stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env})


def finish(procs: list[subprocess.Popen]) -> list[int]:
    """Wait for every process; kill them all if any hangs, so a failure never leaves children."""
    try:
        return [proc.wait(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def mirrored_model(corpus_file, tmp_path_factory) -> Path:
    """A tiny model trained by one process with 2 replicas on 2 logical CPU devices (--strategy auto
    picks mirrored when the CPU is split)."""
    out = tmp_path_factory.mktemp("mirrored")
    proc = textgen_process(["train", corpus_file, *COMMON, "--cpu-devices", "2", "--output-dir", out,
                            "--name", "m"], out / "log.txt")
    assert finish([proc]) == [0], (out / "log.txt").read_text()
    return out / "m"


def test_mirrored_on_two_cpu_devices_trains_like_one_device(mirrored_model, corpus_file, tmp_path, capsys):
    config = read_json(mirrored_model / "config.json")
    assert (config["strategy_used"], config["replicas"], config["workers"]) == ("mirrored", 2, 1)
    assert config["train"]["cpu_devices"] == 2 and config["result"]["steps"] == 15
    code, out, _ = run_cli(["info", mirrored_model], capsys)
    assert code == 0 and "strategy     mirrored, 2 replicas (batch 16 shared among them)" in out
    code, out, err = run_cli(["sample", mirrored_model, "--prime", "ROMEO:", "--length", "40", "--seed", "1"],
                             capsys)
    assert code == 0 and out.startswith("ROMEO:") and len(out) > 40, err
    # the same run on one device: the same batches, the gradients summed in another order
    assert run_cli(["train", corpus_file, *COMMON, "--output-dir", tmp_path, "--name", "one"], capsys)[0] == 0
    one = read_json(tmp_path / "one" / "history.json")
    mirrored = read_json(mirrored_model / "history.json")
    losses = f"one device {one['loss']} {one['val_loss']}, mirrored {mirrored['loss']} {mirrored['val_loss']}"
    assert mirrored["loss"] == pytest.approx(one["loss"], rel=0.01), losses
    assert mirrored["val_loss"] == pytest.approx(one["val_loss"], rel=0.01), losses
    assert mirrored["val_loss"][2] < mirrored["val_loss"][0] - 0.2, losses  # and it learned


def test_carry_state_with_several_replicas_says_so_and_trains_on_shuffled_windows(corpus_file, tmp_path):
    """Carried states are one per row of the whole batch, which replicas would have to split: the
    run says it falls back to shuffled windows, and trains."""
    args = [a for a in COMMON if a != "--quiet"]  # the fallback is said on the run's output
    proc = textgen_process(["train", corpus_file, *args, "--epochs", "1", "--carry-state", "--cpu-devices",
                            "2", "--output-dir", tmp_path, "--name", "c"], tmp_path / "log.txt")
    code = finish([proc])
    log = (tmp_path / "log.txt").read_text()
    assert code == [0], log
    assert ("--carry-state: the replicas would each need their own states; training on shuffled windows "
            "instead.") in log, log
    assert read_json(tmp_path / "c" / "config.json")["replicas"] == 2
    assert len(read_json(tmp_path / "c" / "history.json")["loss"]) == 1


def test_two_workers_train_resume_and_only_the_chief_writes(mirrored_model, corpus_file, tmp_path, capsys):
    """Two real worker processes on loopback ports share each batch of 16 (8 windows each): their
    run, stopped after epoch 1 and resumed, gives the losses of the 2-replica mirrored run."""
    shared, worker_tmp = tmp_path / "models", tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    for session in (["--max-steps", "5"], ["--resume"]):
        cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
        logs = [tmp_path / f"worker{index}.txt" for index in range(2)]
        procs = [textgen_process(["train", corpus_file, *COMMON, "--strategy", "multi-worker", *session,
                                  "--output-dir", shared, "--name", "m"], logs[index], TMPDIR=str(worker_tmp),
                                 TF_CONFIG=json.dumps({"cluster": cluster,
                                                       "task": {"type": "worker", "index": index}}))
                 for index in range(2)]
        assert finish(procs) == [0, 0], "\n".join(log.read_text() for log in logs)
        assert "Traceback" not in logs[0].read_text() + logs[1].read_text()
    assert sorted(p.name for p in shared.iterdir()) == ["m"]  # finished; the worker wrote nothing here
    assert not any(worker_tmp.iterdir())  # and its temporary folder is gone
    config = read_json(shared / "m" / "config.json")
    assert (config["strategy_used"], config["replicas"], config["workers"]) == ("multi-worker", 2, 2)
    assert config["result"]["epochs"] == 3 and config["result"]["steps"] == 15
    workers, mirrored = (read_json(path / "history.json") for path in (shared / "m", mirrored_model))
    losses = (f"2 workers {workers['loss']} {workers['val_loss']}, "
              f"mirrored {mirrored['loss']} {mirrored['val_loss']}")
    assert workers["loss"] == pytest.approx(mirrored["loss"], rel=1e-4), losses
    assert workers["val_loss"] == pytest.approx(mirrored["val_loss"], rel=1e-4), losses
    code, out, err = run_cli(["sample", shared / "m", "--prime", "ROMEO:", "--length", "40", "--seed", "1"],
                             capsys)
    assert code == 0 and out.startswith("ROMEO:") and len(out) > 40, err


# -- mistakes: one line, exit 2, nothing written ---------------------------------------------------
def no_gpu() -> bool:
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


@pytest.mark.parametrize(("args", "tf_config", "message"), [
    (["--strategy", "multi-worker"], None, "needs the TF_CONFIG environment variable"),
    (["--strategy", "multi-worker"], "{not json", "TF_CONFIG is not valid"),
    (["--strategy", "multi-worker"], {"cluster": {**WORKERS, "ps": ["127.0.0.1:3"]},
                                      "task": {"type": "worker", "index": 0}}, "no ps tasks"),
    (["--strategy", "multi-worker"], {"cluster": WORKERS, "task": {"type": "worker", "index": 2}},
     "task worker 2 is not in the cluster"),
    (["--strategy", "multi-worker", "--time-limit", "60"], {"cluster": WORKERS,
                                                            "task": {"type": "worker", "index": 0}},
     "use --max-steps or --epochs"),
    (["--strategy", "multi-worker", "--cpu-devices", "2"], {"cluster": WORKERS,
                                                            "task": {"type": "worker", "index": 0}},
     "--cpu-devices is for --strategy mirrored or auto"),
    (["--strategy", "one-device", "--cpu-devices", "2"], None, "not one-device"),
    pytest.param(["--strategy", "mirrored"], None, "split the CPU with --cpu-devices N",
                 marks=pytest.mark.skipif(not no_gpu(), reason="a GPU makes mirrored possible")),
    pytest.param(["--strategy", "mirrored", "--cpu-devices", "1"], None, "needs two devices or more",
                 marks=pytest.mark.skipif(not no_gpu(), reason="a GPU makes mirrored possible")),
])
def test_strategy_mistakes(args, tf_config, message, corpus_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", tf_config if isinstance(tf_config, str) else json.dumps(tf_config))
    code, _, err = run_cli(["train", corpus_file, *TINY, *args, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_batch_smaller_than_the_replicas_is_refused(corpus_file, tmp_path):
    proc = textgen_process(["train", corpus_file, *TINY, "--strategy", "mirrored", "--cpu-devices", "2",
                            "--batch-size", "1", "--output-dir", tmp_path / "out"], tmp_path / "log.txt")
    assert finish([proc]) == [2]
    assert (tmp_path / "log.txt").read_text().splitlines() == [
        "textgen: error: --batch-size is the global batch, shared by 2 replicas: make it at least 2"]
    assert not (tmp_path / "out").exists()


def test_a_preset_batch_smaller_than_the_replicas_is_refused(corpus_file, tmp_path):
    no_batch = ["--layers", "1", "--units", "8", "--embedding-dim", "8", "--seq-len", "32", "--quiet"]
    proc = textgen_process(["train", corpus_file, *no_batch, "--preset", "large", "--strategy", "mirrored",
                            "--cpu-devices", "40", "--output-dir", tmp_path / "out"], tmp_path / "log.txt")
    assert finish([proc]) == [2]
    assert (tmp_path / "log.txt").read_text().splitlines() == [
        "textgen: error: preset large trains on batches of 32, fewer than the 40 replicas: give --batch-size"]
    assert not (tmp_path / "out").exists()


def test_the_chief_is_the_chief_task_or_else_worker_0():
    from textgen.training.distribute import is_chief, read_cluster

    cluster, role, index = read_cluster({"TF_CONFIG": json.dumps({"cluster": WORKERS,
                                                                  "task": {"type": "worker", "index": 1}})})
    assert (cluster, role, index) == (WORKERS, "worker", 1)
    assert is_chief(WORKERS, "worker", 0) and not is_chief(WORKERS, "worker", 1)
    with_chief = {"chief": ["127.0.0.1:3"], **WORKERS}
    assert is_chief(with_chief, "chief", 0) and not is_chief(with_chief, "worker", 0)
