"""Model selection and result tables on hand-built records (exact answers)."""
import json

import pytest

from XRM.common.errors import UserError
from XRM.results import records
from XRM.results.collect import collect_runs, format_table
from XRM.results.selection import best_candidate, best_hparams_comb, selected_record


def _write(directory, comb, seed, run_records, header=None):
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(header or {"hparams": {"lr": 0.1}})] + [json.dumps(r) for r in run_records]
    (directory / f"results_hpcomb_{comb}_seed{seed}.json").write_text("\n".join(lines) + "\n")


def _phase_2(step, va_wga, te_wga, va_avg=0.9):
    return {"step": step, "va_wga": va_wga, "va_avg_acc": va_avg, "te_wga": te_wga, "te_avg_acc": 0.8}


def test_selected_record_is_the_last_maximum_after_step_0():
    run = [_phase_2(0, 0.9, 0.1), _phase_2(50, 0.7, 0.2), _phase_2(100, 0.7, 0.3), _phase_2(150, 0.6, 0.4)]
    assert selected_record(run, "va_wga")["step"] == 100  # step 0's 0.9 is the untrained model: never chosen
    assert selected_record(run[:1], "va_wga") is None
    phase_1 = [{"step": 0, "flip_rate": 0.3}, {"step": 50, "flip_rate": 0.1}]
    assert selected_record(phase_1, "flip_rate")["step"] == 50  # phase 1: the end of training
    assert selected_record(run, "va_gi_wga") is None


def test_ties_break_on_validation_average_accuracy():
    scores = {0: {"va_wga": 0.7, "va_avg_acc": 0.8}, 1: {"va_wga": 0.7, "va_avg_acc": 0.9}, 2: {"va_wga": 0.6}}
    assert best_candidate(scores, "va_wga") == 1


def test_table_marks_the_best_and_averages_its_seeds(tmp_path):
    _write(tmp_path, 0, 0, [_phase_2(0, 0.99, 0.9), _phase_2(50, 0.5, 0.50), _phase_2(100, 0.6, 0.55)])
    _write(tmp_path, 1, 0, [_phase_2(0, 0.1, 0.1), _phase_2(50, 0.8, 0.70), _phase_2(100, 0.7, 0.20)])
    _write(tmp_path, 1, 1, [_phase_2(0, 0.1, 0.1), _phase_2(50, 0.6, 0.10), _phase_2(100, 0.9, 0.80)])
    runs = collect_runs(tmp_path)
    assert best_hparams_comb(runs, "va_wga") == 1  # comb 0's step-0 record is never selected
    table = format_table(runs, "va_wga")
    lines = table.splitlines()
    assert lines[1].split()[:3] == ["0", "100", "90.0"]
    assert lines[2].split()[:4] == ["*", "1", "50", "90.0"]
    # best comb 1: seed 0 selects step 50 (te_wga 70), seed 1 step 100 (te_wga 80); the population
    # std, as the reference prints: 5.0 (the sample std would be 7.1)
    assert "te_wga 75.0 +/- 5.0" in lines[-1] and "over 2 seed(s)" in lines[-1]
    with pytest.raises(UserError, match="flip_rate does not apply to phase-2"):
        format_table(runs, "flip_rate")


def test_reader_survives_a_cut_last_line_and_names_broken_files(tmp_path, capsys):
    _write(tmp_path, 0, 0, [_phase_2(0, 0.5, 0.5)])
    path = tmp_path / "results_hpcomb_0_seed0.json"
    path.write_text(path.read_text() + '{"step": 50, "va_w')
    header, run_records = records.read_results(path)
    assert header == {"hparams": {"lr": 0.1}} and [r["step"] for r in run_records] == [0]
    assert "unfinished last line" in capsys.readouterr().err
    (tmp_path / "results_hpcomb_1_seed0.json").write_text('{"hparams": {}}\nnot json\n{"step": 0}\n')
    runs = collect_runs(tmp_path)
    assert [r.hparams_comb for r in runs] == [0]
    assert "results_hpcomb_1_seed0.json: line 2 is not JSON" in capsys.readouterr().err
