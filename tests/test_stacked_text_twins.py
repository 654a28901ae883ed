"""--stack_text_runs with XRM's twins (phase 1): a sweep's XRM runs on a text dataset trained as one TextStack, two
networks a run, write the records and phase-1 files each run writes alone; so do LfF's runs (two networks trained
together) and EIIL's (phase 1, one network); the two-stage algorithms, which freeze one network while the other trains (JTT, uLA, BAM), still train
alone.

Tolerances: tests/text_sweep_fixtures.py's (float32 rounding: the stacked pass sums in another order)."""
import dataclasses

import torch
from conftest import comparable, train_until_stopped
from text_sweep_fixtures import (TOLERANCE, TOLERANCES, assert_records_close, records_by_file, text_data,  # noqa: F401
                                 text_sweep, train_sweep)

from XRM.results.records import read_results
from XRM.runs.sweep import make_runs
from XRM.runs.train import train_stack

#: long enough, and fast enough, for XRM's twins to flip labels and write a phase-1 file in some runs (EIIL's
#: runs too train this long)
XRM_STEPS = {"num_steps": 40, "eval_every": 20, "lr": 3e-3}
#: held-out logits (float32 rounding of a 1-layer BERT, summed in another order)
LOGITS_TOLERANCE = 1e-5


def _xrm_sweep(data, bert, out, stacked: bool, **hparams):
    return text_sweep(data, bert, out, stacked, algorithms=("XRM",), phase=1, **XRM_STEPS, **hparams)


def _phase_1_files(out) -> dict[str, dict]:
    return {str(path.relative_to(out)): torch.load(path) for path in sorted(out.rglob("inferred_*.pt"))}


def test_stacked_xrm_twins_write_the_records_and_phase_1_files_of_each_run_alone(text_data, tmp_path, capsys):
    """No dropout: three XRM runs trained as one stack of six networks record the flip rates and losses they record
    alone (a TwinNetwork each), and write the same phase-1 files: the same inferred groups, held-out logits to
    float32 rounding; a run whose groups are degenerate is so both ways."""
    data, bert, _ = text_data
    assert train_sweep(_xrm_sweep(data, bert, tmp_path / "alone", False, last_layer_dropout=0.0)) == [1, 1, 1]
    assert train_sweep(_xrm_sweep(data, bert, tmp_path / "stacked", True, last_layer_dropout=0.0)) == [3]
    assert "stack of 3 runs:" in capsys.readouterr().out
    alone, stacked = records_by_file(tmp_path / "alone"), records_by_file(tmp_path / "stacked")
    assert_records_close(stacked, alone, TOLERANCES, TOLERANCE, steps=None)
    assert max(record.get("flip_rate", 0.0) for records in alone.values() for record in records) > 0.1  # they flip
    files, expected = _phase_1_files(tmp_path / "stacked"), _phase_1_files(tmp_path / "alone")
    assert list(files) == list(expected) and len(expected) >= 1
    for name, saved in expected.items():
        assert torch.equal(files[name]["tr"], saved["tr"]) and torch.equal(files[name]["va"], saved["va"])
        assert (files[name]["tr_ho"] - saved["tr_ho"]).abs().max() < LOGITS_TOLERANCE
    headers = [read_results(path)[0] for path in sorted((tmp_path / "stacked").rglob("results_*.json"))]
    assert all(header["stack_text_runs"] is True for header in headers)


def test_twin_runs_draw_their_own_dropout_in_any_stack_and_resume_exactly(text_data, tmp_path):
    """With dropout: each twin draws from a generator of its own, so an XRM run records the same in a stack of
    three and in a stack of one; a stack stopped by SIGTERM resumes (both twins' generators restored) to
    bitwise the records of the unbroken one."""
    data, _, bert = text_data
    assert train_sweep(_xrm_sweep(data, bert, tmp_path / "three", True)) == [3]
    assert train_sweep(_xrm_sweep(data, bert, tmp_path / "one", True), stack_size=1) == [1, 1, 1]
    three = records_by_file(tmp_path / "three")
    assert_records_close(three, records_by_file(tmp_path / "one"), TOLERANCES, TOLERANCE, steps=None)
    runs = make_runs(_xrm_sweep(data, bert, tmp_path / "stopped", True))
    train_until_stopped(runs[0], 2, stack=runs)
    assert not list((tmp_path / "stopped").rglob("done_*"))
    train_stack([dataclasses.replace(run, resume=True) for run in runs])
    assert len(list((tmp_path / "stopped").rglob("done_*"))) == 3
    assert comparable(records_by_file(tmp_path / "stopped")) == comparable(three)


def test_lff_runs_stacked_write_the_records_of_each_run_alone(text_data, tmp_path, capsys):
    """No dropout: LfF's two networks (the biased one by GCE, the debiased one weighted by difficulty) of three runs
    trained as one stack of six networks record what each run records alone."""
    data, bert, _ = text_data
    sweeps = {kind: text_sweep(data, bert, tmp_path / kind, kind == "stacked", algorithms=("LfF",), lr=3e-3,
                               last_layer_dropout=0.0) for kind in ("alone", "stacked")}
    assert train_sweep(sweeps["alone"]) == [1, 1, 1]
    capsys.readouterr()
    assert train_sweep(sweeps["stacked"]) == [3] and "stack of 3 runs:" in capsys.readouterr().out
    alone = records_by_file(tmp_path / "alone")
    assert_records_close(records_by_file(tmp_path / "stacked"), alone, TOLERANCES, TOLERANCE)
    losses = [record["train_loss"] for records in alone.values() for record in records if "train_loss" in record]
    assert max(losses) - min(losses) > 1e-3  # they train


def test_stacked_eiil_runs_write_the_records_of_each_run_alone(text_data, tmp_path):
    """Phase 1 with one network a run (EIIL's reference model): stacked, each run records what it records alone,
    its group inference's last record (its penalty, whether the groups are degenerate) included."""
    data, bert, _ = text_data
    sweeps = {kind: text_sweep(data, bert, tmp_path / kind, kind == "stacked", algorithms=("EIIL",), phase=1,
                               last_layer_dropout=0.0, **XRM_STEPS) for kind in ("alone", "stacked")}
    assert train_sweep(sweeps["alone"]) == [1, 1, 1] and train_sweep(sweeps["stacked"]) == [3]
    alone = records_by_file(tmp_path / "alone")
    assert_records_close(records_by_file(tmp_path / "stacked"), alone, TOLERANCES, TOLERANCE, steps=None)
    assert all(records[-1]["step"] == XRM_STEPS["num_steps"] and "eiil_penalty" in records[-1]
               for records in alone.values())


def test_only_algorithms_whose_networks_all_train_at_every_step_stack(text_data, tmp_path):
    """XRM and LfF (two networks trained together) and ERM (one network) stack with --stack_text_runs; JTT, uLA and
    BAM, which freeze one network while the other trains, do not (their runs train alone, as without the option)."""
    data, bert, _ = text_data
    for algorithm, phase, stacks in (("XRM", 1, True), ("ERM", 2, True), ("LfF", 2, True), ("JTT", 2, False),
                                     ("uLA", 2, False), ("BAM", 2, False)):
        spec = make_runs(text_sweep(data, bert, tmp_path, True, algorithms=(algorithm,), phase=phase))[0]
        assert spec.trains_in_text_stack("text") is stacks, algorithm
        assert dataclasses.replace(spec, stack_text_runs=False).trains_in_text_stack("text") is False
