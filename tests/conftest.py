"""Shared test fixtures: the repository root on sys.path, one CPU thread, helpers to run the CLIs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)


def run_script(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a repository script with this interpreter (extra ``env`` variables added); returns the
    completed process (output captured)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def script():
    """The :func:`run_script` helper."""
    return run_script


def comparable(found):
    """Records (a list, or a dict of lists by file) without their timing keys (records.without_timing):
    what two runs that trained alike record alike."""
    from XRM.results.records import without_timing

    if isinstance(found, dict):
        return {key: comparable(value) for key, value in found.items()}
    return [without_timing(record) for record in found]


def without_training_loss(found):
    """:func:`comparable` records without ``train_loss`` too: a mean of per-example losses summed in
    another order (a stack pads its batches) may differ in its last bits, where the weights and
    metrics do not."""
    if isinstance(found, dict):
        return {key: without_training_loss(value) for key, value in found.items()}
    return [{key: value for key, value in record.items() if key != "train_loss"} for record in comparable(found)]


def training_losses(found) -> list[float]:
    """Every ``train_loss`` of records (a list, or a dict of lists by file), in order."""
    if isinstance(found, dict):
        return [loss for key in sorted(found) for loss in training_losses(found[key])]
    return [record["train_loss"] for record in found if "train_loss" in record]


def refusal_line(module, argv: list[str], capsys) -> str:
    """Call a script module's ``main`` on ``argv`` as run_cli does; assert exit status 2 and a
    stderr of one line, and return that line."""
    from XRM.cli.entry_point import call_main

    assert call_main(module.main, module.get_args_parser().parse_args(argv)) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def train_until_stopped(spec, lines: int, stack=None) -> None:
    """Train ``spec`` (a RunSpec; or the runs ``stack``, spec among them) in this process until its results file
    holds more than ``lines`` lines, then stop it with SIGTERM, as a scheduler does; the training's Interrupted
    is expected and swallowed."""
    import signal
    import threading
    import time

    from XRM.common.errors import Interrupted
    from XRM.runs.train import train_stack

    results = spec.files.results

    def stop_once_it_records() -> None:
        while not (results.exists() and len(results.read_text().splitlines()) > lines):
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=stop_once_it_records)
    sender.start()
    with pytest.raises(Interrupted):
        train_stack(stack or [spec])
    sender.join()
