"""--stack_text_runs: a sweep's phase-2 BERT runs trained as one TextStack write what each run writes alone.

Backbones train in float32 whatever ``--dtype`` (bf16 autocast on CUDA), alone and stacked: the
stacked pass (XRM/networks/stacked_bert.py) sums in another order than Hugging Face's, so the
records agree to float32 rounding (TOLERANCE), not bitwise; training losses to LOSS_TOLERANCE, as
AdamW divides a gradient by its own size: a nearly cancelling one (GroupDRO's here) moves a weight
by about lr whatever its rounding. A resumed stack is bitwise its unbroken self.
"""
import dataclasses

import backbone_fixtures as fx
import pytest
from conftest import comparable, train_until_stopped
from text_sweep_fixtures import (LOSS_TOLERANCE, TOLERANCE, TOLERANCES, assert_records_close, records_by_file,
                                 text_data, text_sweep, train_sweep)  # noqa: F401 (text_data: a fixture)

from XRM.common.errors import UserError
from XRM.engine import memory_budget
from XRM.results.records import read_results
from XRM.runs.sweep import make_runs
from XRM.runs.train import train_stack

def test_stacked_text_runs_write_the_records_of_each_run_alone(text_data, tmp_path):
    """No dropout (the head's too): each run's records, stacked (ERM's and GroupDRO's runs in one stack, each
    algorithm's state its own), are its records trained alone today (a ModuleStack each), to float32
    rounding; the runs' batch sizes differ, and they train."""
    data, bert, _ = text_data
    both = {"algorithms": ("ERM", "GroupDRO"), "last_layer_dropout": 0.0}
    assert train_sweep(text_sweep(data, bert, tmp_path / "alone", False, **both)) == [1] * 6
    assert train_sweep(text_sweep(data, bert, tmp_path / "stacked", True, **both)) == [6]
    alone, stacked = records_by_file(tmp_path / "alone"), records_by_file(tmp_path / "stacked")
    assert_records_close(stacked, alone, TOLERANCES, TOLERANCE)
    headers = [read_results(path)[0] for path in sorted((tmp_path / "stacked").rglob("results_*.json"))]
    assert sorted(header["hparams"]["batch_size"] for header in headers) == [17, 17, 19, 19, 31, 31]
    assert all(header["stack_text_runs"] is True for header in headers)
    for name, records in alone.items():  # the runs move: their losses by more than the tolerances
        losses = [record["train_loss"] for record in records if "train_loss" in record]
        assert max(losses) - min(losses) > 4 * LOSS_TOLERANCE, name


def test_a_run_draws_the_same_dropout_in_any_stack(text_data, tmp_path, monkeypatch, capsys):
    """BERT's dropout and the head's: a run's masks come from its own generator, so it records the same in
    a stack of three, in a stack of one (--stack_size 1), and where the engine splits the stack of three
    because the device's free memory holds less than one run's estimate."""
    data, _, bert = text_data
    assert train_sweep(text_sweep(data, bert, tmp_path / "three", True)) == [3]
    assert "stack of 3 runs:" in capsys.readouterr().out
    assert train_sweep(text_sweep(data, bert, tmp_path / "one", True), stack_size=1) == [1, 1, 1]
    assert_records_close(records_by_file(tmp_path / "three"), records_by_file(tmp_path / "one"), TOLERANCES, TOLERANCE)
    capsys.readouterr()
    monkeypatch.setattr(memory_budget, "free_memory", lambda device: 1)  # a full device: no two runs fit
    assert train_sweep(text_sweep(data, bert, tmp_path / "split", True)) == [3]  # planned together, split by the engine
    shown = capsys.readouterr().out
    assert "stack of" not in shown and shown.count("hpcomb_2_seed0: step 9/9") == 1
    assert_records_close(records_by_file(tmp_path / "three"), records_by_file(tmp_path / "split"), TOLERANCES, TOLERANCE)


def test_a_stopped_stack_resumes_to_the_records_of_an_unbroken_one(text_data, tmp_path):
    """With dropout: stopped by SIGTERM after run 0's second record, the stack of three resumes from its
    checkpoints (weights, optimisers, schedules, dropout generators) and writes bitwise the records of a
    stack never stopped; resuming its runs without --stack_text_runs is refused."""
    data, _, bert = text_data
    train_sweep(text_sweep(data, bert, tmp_path / "unbroken", True))
    runs = make_runs(text_sweep(data, bert, tmp_path / "stopped", True))
    train_until_stopped(runs[0], 2, stack=runs)
    assert not list((tmp_path / "stopped").rglob("done_*"))
    assert all(len(read_results(run.files.results)[1]) < 3 for run in runs)
    written = {run.files.results: run.files.results.read_bytes() for run in runs}
    alone = [dataclasses.replace(run, resume=True, stack_text_runs=False) for run in runs]
    with pytest.raises(UserError, match=f"^{runs[0].run_name}: its checkpoint was written with --stack_text_runs, "
                                        "which draws dropout otherwise: resume it with --stack_text_runs, or delete"):
        train_stack(alone)  # its dropout draws would not go on: refused before anything is written
    assert {path: path.read_bytes() for path in written} == written
    train_stack([dataclasses.replace(run, resume=True) for run in runs])
    assert len(list((tmp_path / "stopped").rglob("done_*"))) == 3
    assert comparable(records_by_file(tmp_path / "stopped")) == comparable(records_by_file(tmp_path / "unbroken"))


def test_stacking_a_text_model_that_is_no_plain_bert_is_one_line(text_data, tmp_path, capsys):
    """Exit status 2 and one error line (beside transformers' progress bars), before any run writes a file."""
    data, _, _ = text_data
    relative = fx.write_tiny_bert(tmp_path / "relative-bert", position_embedding_type="relative_key")
    out = tmp_path / "out"
    argv = fx.main_args("--phase", "2", "--datasets", "CivilComments", "--algorithms", "ERM", "--data_path", str(data),
                        "--text_model", str(relative), "--out_dir", str(out), "--num_hparams_combs", "2",
                        "--hparams", '{"num_steps": 3, "eval_every": 2}', "--stack_text_runs")
    import main
    from XRM.cli.entry_point import call_main

    capsys.readouterr()
    assert call_main(main.main, main.get_args_parser().parse_args(argv)) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and [line for line in error.splitlines() if "error" in line] == [
        f"error: --stack_text_runs stacks plain BERT encoders only (absolute positions, a pooler); {relative} is not "
        "one: train its runs without --stack_text_runs"]
    assert not list(out.rglob("results_*.json"))
