"""--tensorboard: each run's records as TensorBoard scalars in its own folder, read back with
TensorBoard's own reader; the records unchanged; a resumed run's curves those of its records; without
the package, one line before any training."""
import dataclasses
import sys

import pytest
import torch
from conftest import comparable, refusal_line, train_until_stopped

from XRM.common.errors import UserError
from XRM.results.records import RunFiles, read_results
from XRM.runs.spec import RunSpec
from XRM.runs.train import train_stack

MISSING = "error: --tensorboard needs the tensorboard package: pip install tensorboard"


def _curves(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard folder as TensorBoard shows it: tag -> [(step, value)] (purged steps gone)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _record_curves(run_records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The same view of a run's records: every recorded number by key, at its record's step."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for record in run_records:
        for key, value in record.items():
            if key != "step" and not isinstance(value, bool):
                curves.setdefault(key, []).append((record["step"], value))
    return curves


def _assert_curves_are_the_records(files: RunFiles) -> dict[str, list[tuple[int, float]]]:
    curves, expected = _curves(files.tensorboard), _record_curves(read_results(files.results)[1])
    assert curves.keys() == expected.keys()
    for key, points in expected.items():  # event files hold 32-bit floats
        assert [step for step, _ in curves[key]] == [step for step, _ in points], key
        assert [value for _, value in curves[key]] == pytest.approx([value for _, value in points], rel=1e-6), key
    return curves


def _spec(out, **options) -> RunSpec:
    return RunSpec(phase=2, dataset="Synthetic", algorithm="GroupDRO", hparams_comb=0, seed=0, out_dir=str(out),
                   group_labels="yes", device="cpu", checkpoint_seconds=0,
                   hparams_overrides={"num_steps": 201, "eval_every": 10}, **options)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Phase 2 of two ERM combinations trained as one stack, with --tensorboard."""
    pytest.importorskip("tensorboard")
    from conftest import run_script

    out = tmp_path_factory.mktemp("tensorboard") / "out"
    result = run_script("main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "ERM",
                        "--num_hparams_combs", "2", "--out_dir", str(out), "--device", "cpu", "--tensorboard",
                        "--hparams", '{"num_steps": 41, "eval_every": 10}')
    assert result.returncode == 0, result.stderr
    assert "stack of 2 runs" in result.stdout
    return out / "ERM" / "Synthetic" / "group_labels_yes"


def test_each_run_of_a_stack_shows_its_own_records(sweep):
    shown = [_assert_curves_are_the_records(RunFiles(sweep, comb, 0)) for comb in (0, 1)]
    for curves in shown:
        assert [step for step, _ in curves["va_wga"]] == [0, 10, 20, 30, 40]
        assert {"train_loss", "lr", "steps_per_s", "examples_per_s", "te_wga", "te_acc_group_0"} <= curves.keys()
        assert len(curves["te_wga"]) < 5  # the evaluations that skipped the test split show no test metric
    assert shown[0]["lr"] != shown[1]["lr"]  # two combinations, two folders
    assert sorted(path.name for path in (sweep / "tensorboard").iterdir()) == ["hpcomb_0_seed0", "hpcomb_1_seed0"]


def test_a_resumed_run_shows_its_records_and_the_killed_run_s_later_steps_vanish(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    train_stack([_spec(tmp_path / "plain")])
    spec = _spec(tmp_path / "shown", tensorboard=True)
    train_until_stopped(spec, 6)
    stopped_at = torch.load(spec.files.checkpoint)["step"]
    assert stopped_at < 190
    with SummaryWriter(str(spec.files.tensorboard)) as killed:  # what a killed run wrote after its checkpoint
        for step in range(stopped_at + 1, stopped_at + 30):
            killed.add_scalar("va_wga", -1.0, step)
    train_stack([dataclasses.replace(spec, resume=True)])
    curves = _assert_curves_are_the_records(spec.files)
    assert [step for step, _ in curves["va_wga"]] == list(range(0, 201, 10))
    assert -1.0 not in [value for _, value in curves["va_wga"]]
    # the writer changes no record: those of a run without it, timing aside
    assert comparable(read_results(spec.files.results)[1]) == comparable(read_results(_spec(tmp_path / "plain").files.results)[1])


@pytest.mark.parametrize("command", ["main", "reproduce"])
def test_without_the_package_the_option_is_one_line_before_any_training(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    module = __import__(command)
    argv = ["--datasets", "Synthetic", "--out_dir", str(tmp_path / "out"), "--tensorboard"]
    assert refusal_line(module, (["--phase", "2"] if command == "main" else []) + argv, capsys) == MISSING
    assert not (tmp_path / "out").exists()


def test_without_the_package_the_library_refuses_the_option_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    spec = _spec(tmp_path, tensorboard=True)
    with pytest.raises(UserError, match=f"^{MISSING.removeprefix('error: ')}$"):
        train_stack([spec])
    assert not spec.files.results.exists() and not spec.files.tensorboard.exists()
