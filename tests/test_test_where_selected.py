"""The test split evaluated only where a selection rule may look (default) against every evaluation
(--test_every_evaluation): the same tables, selected steps and numbers; null test metrics exactly where
no criterion reached its best so far; resumed runs equal unbroken ones; the readers take the gaps."""
import dataclasses
import json
import math

import pytest
import torch
from conftest import comparable, train_until_stopped
from test_reproduce import make_features, reproduce_here

from XRM.results import records
from XRM.results.collect import collect_runs, format_table
from XRM.results.frame import load_records
from XRM.results.selection import selected_record
from XRM.runs.spec import RunSpec
from XRM.runs.train import train_stack

ALGORITHMS = ["MAT", "ERM", "GroupDRO", "JTT"]
CRITERIA = ("va_wga", "va_gi_wga", "va_avg_acc", "va_neg_class_diff")  # every rule a step is selected by
SHORT = '{"num_steps": 101, "eval_every": 10, "lr": 0.01}'


def _harder(path):
    """make_features' file with noise on the core feature: accuracy below 100%, so the curves move."""
    splits = torch.load(path)
    generator = torch.Generator().manual_seed(1)
    for split in splits.values():
        split["x"][:, 0] += 1.5 * torch.randn(len(split["x"]), generator=generator)
    torch.save(splits, path)
    return path


def _table(runs, metric):
    """format_table's lines but the provenance line (it names when each run started)."""
    return [line for line in format_table(runs, metric).splitlines() if not line.startswith("trained on")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """reproduce.py's protocol on one features file, without and with --test_every_evaluation: (off, on)."""
    folder = tmp_path_factory.mktemp("where_selected")
    data = _harder(make_features(folder / "tiny.pt"))
    outs = []
    for name, extra in (("off", []), ("on", ["--test_every_evaluation"])):
        args = ["reproduce.py", "--datasets", str(data), "--algorithms", *ALGORITHMS, "--num_hparams_combs", "2",
                "--num_seeds", "2", "--out_dir", str(folder / name), "--hparams", SHORT, "--checkpoint_seconds", "0",
                *extra]
        assert reproduce_here(args) == 0
        outs.append(folder / name)
    return tuple(outs)


def _raw_records(path):
    """A results file's records as written (nulls kept), after its header."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if "step" in line]


def _phase_2_files(out):
    """Every phase-2 results file under ``out``, relative path -> path."""
    found = {}
    for path in sorted(out.rglob("results_hpcomb_*_seed*.json")):
        if not any("flip_rate" in record for record in _raw_records(path)):
            found[str(path.relative_to(out))] = path
    return found


def _is_test_key(key):
    return key in ("te_avg_acc", "te_wga") or key.startswith("te_acc_group_")


def test_the_same_table_and_selected_steps_with_and_without_the_option(folders):
    off, on = folders
    assert (off / "table1.csv").read_text() == (on / "table1.csv").read_text()
    # 4 sweeps of 2 combinations (ERM's and JTT's serve both settings), then seed 1 of each folder's selected ones
    assert _phase_2_files(off).keys() == _phase_2_files(on).keys() and len(_phase_2_files(off)) >= 4 * 2 + 4
    for directory in {path.parent for path in _phase_2_files(off).values()}:
        runs_off = collect_runs(directory)
        runs_on = collect_runs(on / directory.relative_to(off))
        for run_off, run_on in zip(runs_off, runs_on, strict=True):
            for metric in CRITERIA:
                chosen_off, chosen_on = selected_record(run_off.records, metric), selected_record(run_on.records, metric)
                # the same step, validation and test metrics
                assert records.without_timing(chosen_off or {}) == records.without_timing(chosen_on or {})
                if chosen_off is not None:
                    assert chosen_off["te_wga"] is not None and "te_acc_group_0" in chosen_off
        for metric in ("va_wga", "va_avg_acc"):
            assert _table(runs_off, metric) == _table(runs_on, metric)


def test_null_test_metrics_exactly_where_no_criterion_reached_its_best(folders):
    off, on = folders
    nulls = 0
    for name, path in _phase_2_files(off).items():
        written, full = _raw_records(path), _raw_records(on / name)
        assert len(written) == len(full)
        for position, (record, complete) in enumerate(zip(written, full)):
            earlier = [q for q in written[:position] if q["step"] > 0]
            reached = record["step"] > 0 and any(
                record.get(m) is not None and record[m] >= max((q[m] for q in earlier), default=-math.inf)
                for m in CRITERIA)
            tests = {key: value for key, value in record.items() if _is_test_key(key)}
            assert tests and all((value is not None) == reached for value in tests.values()), (name, record["step"])
            nulls += not reached
            expected = {key: (value if reached or not _is_test_key(key) else None) for key, value in complete.items()}
            # validation metrics everywhere, test metrics where reached, as the full run's
            assert records.without_timing(record) == records.without_timing(expected)
    assert nulls > 0  # the option saved some test passes


def _reference_rule(path, metric, last):
    """The reference reader's rule, re-implemented: the step (after 0) of the highest ``metric`` (the first
    or the ``last`` such step) and its test metrics, read from the file's lines."""
    candidates = [record for record in _raw_records(path) if record["step"] > 0 and metric in record]
    if not candidates:
        return None
    best = max(record[metric] for record in candidates)
    chosen = [record for record in candidates if record[metric] == best][-1 if last else 0]
    return chosen["step"], chosen["te_wga"], chosen["te_avg_acc"]


def test_the_reference_rule_reads_the_same_numbers_from_both_folders(folders):
    off, on = folders
    for name, path in _phase_2_files(off).items():
        for metric in CRITERIA:
            for last in (False, True):
                picked = _reference_rule(path, metric, last)
                assert picked == _reference_rule(on / name, metric, last)
                assert picked is None or None not in picked


def test_the_frame_has_nan_where_test_metrics_are_null(folders):
    off, on = folders
    frame_off, frame_on = load_records(off), load_records(on)
    phase_2 = frame_off.va_wga.notna()
    assert frame_off.te_wga[phase_2].isna().any() and frame_on.te_wga[phase_2].notna().all()
    kept = frame_off.te_wga.notna()
    assert frame_off.te_wga[kept].tolist() == frame_on.te_wga[kept].tolist()


def test_null_test_metrics_are_read_as_not_recorded_without_a_warning(tmp_path, capsys):
    path = tmp_path / "results_hpcomb_0_seed0.json"
    path.write_text('{"hparams": {}}\n{"step": 10, "va_wga": 0.5, "te_wga": null, "te_avg_acc": null, '
                    '"te_acc_group_3": null}\n{"step": 20, "va_wga": null}\n{"step": 30, "va_wga": 0.4, "te_wga": 0.3}\n')
    header, found = records.read_results(path)
    assert found == [{"step": 10, "va_wga": 0.5}, {"step": 30, "va_wga": 0.4, "te_wga": 0.3}]
    assert capsys.readouterr().err.splitlines() == [f"warning: skipping line 3 of {path}: its va_wga null is not a number"]
    records.truncate_records(path, 20)
    assert path.read_text().splitlines()[1] == json.dumps(
        {"step": 10, "te_acc_group_3": None, "te_avg_acc": None, "te_wga": None, "va_wga": 0.5}, sort_keys=True)


def _stopped_then_resumed(spec, drop_bests):
    """Train ``spec``, stopped by SIGTERM once it recorded a few evaluations, then resumed (its checkpoint
    without the criteria's bests when ``drop_bests``: a checkpoint written before they were kept)."""
    train_until_stopped(spec, 8)
    checkpoint = torch.load(spec.files.checkpoint)
    assert checkpoint["step"] < 400 and checkpoint["selection_bests"]
    if drop_bests:
        del checkpoint["selection_bests"]
        torch.save(checkpoint, spec.files.checkpoint)
    train_stack([dataclasses.replace(spec, resume=True)])


@pytest.mark.parametrize("drop_bests", [False, True])
def test_a_resumed_run_writes_the_records_of_an_unbroken_one(tmp_path, drop_bests):
    def spec(out):
        return RunSpec(phase=2, dataset="Synthetic", algorithm="GroupDRO", hparams_comb=0, seed=0, out_dir=str(out),
                       group_labels="yes", device="cpu", checkpoint_seconds=0,
                       hparams_overrides={"num_steps": 401, "eval_every": 5})

    train_stack([spec(tmp_path / "unbroken")])
    _stopped_then_resumed(spec(tmp_path / "resumed"), drop_bests)
    unbroken, resumed = (_raw_records(spec(out).files.results) for out in (tmp_path / "unbroken", tmp_path / "resumed"))
    assert comparable(resumed) == comparable(unbroken) and len(unbroken) == 81
    assert any(record["te_wga"] is None for record in unbroken)
