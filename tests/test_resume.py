"""A run killed part-way and resumed writes the same records and model as an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import ROOT

ARGS = ["main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO", "--group_labels", "yes",
        "--hparams", '{"num_steps": 4001, "eval_every": 100}', "--checkpoint_seconds", "0"]


def _run_dir(out: Path) -> Path:
    return out / "GroupDRO" / "Synthetic" / "group_labels_yes"


def test_killed_then_resumed_equals_unbroken(tmp_path, script):
    unbroken = script(*ARGS, "--out_dir", str(tmp_path / "a"))
    assert unbroken.returncode == 0, unbroken.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, *ARGS, "--out_dir", str(tmp_path / "b")], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = _run_dir(tmp_path / "b") / "ckpt_hpcomb_0_seed0.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.005)
    time.sleep(0.3)  # let it get somewhere between two checkpoints
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (_run_dir(tmp_path / "b") / "done_hpcomb_0_seed0").exists(), "the run finished before it was killed"
    killed_at = torch.load(checkpoint)["step"]
    assert 0 <= killed_at < 4000

    resumed = script(*ARGS, "--out_dir", str(tmp_path / "b"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    results = "results_hpcomb_0_seed0.json"
    lines_a = (_run_dir(tmp_path / "a") / results).read_text().splitlines()
    lines_b = (_run_dir(tmp_path / "b") / results).read_text().splitlines()
    assert len(lines_a) == 1 + 41  # header + evaluations at steps 0, 100, ..., 4000
    assert lines_b[1:] == lines_a[1:]  # the same records, none lost or repeated
    assert json.loads(lines_b[0])["hparams"] == json.loads(lines_a[0])["hparams"]
    final_a = torch.load(_run_dir(tmp_path / "a") / "ckpt_hpcomb_0_seed0.pt")
    final_b = torch.load(_run_dir(tmp_path / "b") / "ckpt_hpcomb_0_seed0.pt")
    for part in ("model", "algorithm_state"):  # weights and GroupDRO's q alike
        for key, value in final_a[part].items():
            assert torch.equal(value, final_b[part][key]), key


def test_corrupt_checkpoint_with_resume_is_a_user_error(tmp_path, script):
    directory = _run_dir(tmp_path / "c")
    directory.mkdir(parents=True)
    (directory / "ckpt_hpcomb_0_seed0.pt").write_bytes(b"\x00garbage")
    result = script(*ARGS, "--out_dir", str(tmp_path / "c"), "--resume")
    assert result.returncode == 2
    assert "checkpoint" in result.stderr and "delete it" in result.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["ckpt_hpcomb_0_seed0.pt"]
