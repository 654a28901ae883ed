"""Results folders read defensively: lines that are no records are skipped and named, runs whose
files disagree are listed with their repair and never selected, and nothing ends in a traceback."""
import json
import shlex
import subprocess

import pytest
import torch

import mat  # noqa: F401  (registers MAT, as a user's import does)
from XRM.results import records
from XRM.results.collect import broken_runs, collect_runs, format_table
from XRM.results.selection import best_hparams_comb, selected_record
from XRM.runs.sweep import select_phase_1_file

HEADER = {"hparams": {"lr": 0.1}}


def _record(step, va_wga, te_wga=0.5):
    return {"step": step, "va_wga": va_wga, "va_avg_acc": 0.9, "te_wga": te_wga, "te_avg_acc": 0.8}


def _write(directory, comb, lines, seed=0):
    """A results file of ``lines`` (JSON values, or raw text for str lines); its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"results_hpcomb_{comb}_seed{seed}.json"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


# Valid JSON, but no evaluation record: each skipped with the reason.
NOT_RECORDS = [("42", "42 is not a record (a JSON object)"),
               ("[1, 2]", "[1, 2] is not a record (a JSON object)"),
               ('{"step": 5, "va_wga": "high"}', 'its va_wga "high" is not a number'),
               ('{"step": null, "va_wga": 0.99}', "its step null is not a whole number"),
               ('{"step": 7, "va_wga": Infinity}', "its va_wga Infinity is not a finite number"),
               ('{"step": 8, "degenerate": "yes"}', 'its degenerate "yes" is not true or false'),
               ('{"va_wga": 0.3}', "the record has no step")]


def test_lines_that_are_no_records_are_skipped_and_named(tmp_path, capsys):
    lines = [HEADER, _record(0, 0.1), *(text for text, _ in NOT_RECORDS), _record(50, 0.6), '{"step": 60, "va_w']
    path = _write(tmp_path, 0, lines)
    header, run_records = records.read_results(path)
    assert header == HEADER
    assert [record["step"] for record in run_records] == [0, 50]
    assert capsys.readouterr().err.splitlines() == [
        *(f"warning: skipping line {number} of {path}: {why}" for number, (_, why) in enumerate(NOT_RECORDS, 3)),
        f"warning: skipping the unfinished last line of {path}"]


def test_nan_counts_as_not_recorded(tmp_path):
    path = _write(tmp_path, 0, [HEADER, '{"step": 50, "va_wga": NaN, "va_avg_acc": 0.7}'])
    assert records.read_results(path) == (HEADER, [{"step": 50, "va_avg_acc": 0.7}])


def test_a_record_without_a_step_is_never_selected(tmp_path):
    # comb 0's best va_wga is in a record whose step is null: skipped, so comb 1 is the best
    _write(tmp_path, 0, [HEADER, _record(0, 0.1), '{"step": null, "va_wga": 0.99, "te_wga": 0.99}', _record(50, 0.4)])
    _write(tmp_path, 1, [HEADER, _record(0, 0.1), _record(50, 0.6)])
    runs = collect_runs(tmp_path)
    assert best_hparams_comb(runs, "va_wga") == 1
    assert selected_record(runs[0].records, "va_wga")["step"] == 50


def _phase_2_folder(root):
    """A phase-2 folder (ERM / Synthetic / group_labels_yes) whose files hold lines that are no records."""
    directory = root / "ERM" / "Synthetic" / "group_labels_yes"
    _write(directory, 0, [HEADER, _record(0, 0.1), *(text for text, _ in NOT_RECORDS), _record(50, 0.6, 0.7)])
    _write(directory, 1, [HEADER, _record(0, 0.1), "[1, 2]", _record(50, 0.5, 0.4)])
    return directory


@pytest.mark.parametrize("flags", [[], ["--table", "md"], ["--table", "csv"]])
def test_read_results_reads_such_folders_without_a_traceback(script, tmp_path, flags):
    directory = _phase_2_folder(tmp_path)
    result = script("XRM/read_results.py", "--dir", str(tmp_path), *flags)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"warning: skipping line 3 of {directory / 'results_hpcomb_0_seed0.json'}: 42 is not a record" \
        in result.stderr
    if not flags:
        assert "best hpcomb 0 by va_wga (seed 0); over 1 seed(s): te_wga 70.0 +/- 0.0" in result.stdout


def test_plots_into_a_file_is_one_line(script, tmp_path):
    _phase_2_folder(tmp_path)
    existing = tmp_path / "plots.png"
    existing.write_bytes(b"not a folder")
    result = script("XRM/read_results.py", "--dir", str(tmp_path), "--plots", str(existing))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --plots {existing} is a file: pass a directory"]
    assert existing.read_bytes() == b"not a folder"


def _phase_1_run(directory, comb, lines):
    _write(directory, comb, lines)
    torch.save({"tr": torch.zeros(4, dtype=torch.long)}, directory / f"inferred_hpcomb_{comb}_seed0.pt")


def test_phase_1_selection_passes_over_lines_that_are_no_records(tmp_path):
    directory = tmp_path / "XRM" / "Synthetic" / "group_labels_no"
    _phase_1_run(directory, 0, [HEADER, {"step": 0, "flip_rate": 0.0}, {"step": 100, "flip_rate": 0.2}])
    # comb 1's last line claims the best flip rate with a step that is no step: read as ending at 0.1
    _phase_1_run(directory, 1, [HEADER, {"step": 0, "flip_rate": 0.0}, {"step": 100, "flip_rate": 0.1},
                                {"step": "100", "flip_rate": 0.9}, '{"step": 100, "flip_rate": "0.9"}'])
    assert select_phase_1_file(tmp_path / "XRM", "Synthetic", 0) == directory / "inferred_hpcomb_0_seed0.pt"


def _toolkit_header(directory, comb):
    return {**HEADER, "done_path": str(directory / f"done_hpcomb_{comb}_seed0")}


def _disagreeing_folder(directory):
    """Run 0 finished and sound; runs 1-4 with files that disagree."""
    done = [_record(0, 0.1), _record(50, 0.6)]
    _write(directory, 0, [_toolkit_header(directory, 0), *done])
    _write(directory, 1, [_toolkit_header(directory, 1)])  # done, but no records
    _write(directory, 2, [_record(0, 0.1), _record(50, 0.9)])  # records without a header
    _write(directory, 4, [])  # a checkpoint beside an empty results file
    for comb in (0, 1, 2, 3):  # 3: done, but no results file
        (directory / f"done_hpcomb_{comb}_seed0").write_text("")
    for comb in (4, 5):  # 5: a checkpoint, no results file
        (directory / f"ckpt_hpcomb_{comb}_seed0.pt").write_bytes(b"checkpoint")
    _write(directory, 6, [_toolkit_header(directory, 6)])  # started, nothing evaluated yet: not listed


def test_runs_whose_files_disagree_are_listed_with_their_repair(script, tmp_path):
    directory = tmp_path / "ERM" / "Synthetic" / "group_labels_yes"
    _disagreeing_folder(directory)
    result = script("XRM/read_results.py", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr

    def start_over(comb):
        folder, tag = shlex.quote(str(directory)), f"hpcomb_{comb}_seed0"
        return f"delete its files (rm -f {folder}/*_{tag}.json {folder}/*_{tag}.pt {folder}/done_{tag}) and run it again"

    assert "best hpcomb 0 by va_wga" in result.stdout  # never run 2, whose 0.9 has no header
    assert result.stdout.splitlines()[-6:] == [
        "not selected (5):",
        f"  hpcomb_1_seed0: it has a done file but no records; {start_over(1)}",
        f"  hpcomb_2_seed0: its records have no header line (the run's hyper-parameters); {start_over(2)}",
        f"  hpcomb_3_seed0: it has a done file but no results file; {start_over(3)}",
        "  hpcomb_4_seed0: it has a checkpoint but an empty results file; run it again with --resume, which "
        "restarts it from step 0",
        "  hpcomb_5_seed0: it has a checkpoint but no results file; run it again with --resume, which restarts "
        "it from step 0"]


def test_the_repair_command_deletes_exactly_the_runs_files(tmp_path):
    directory = tmp_path / "with space"
    _disagreeing_folder(directory)
    (directory / "results_hpcomb_1_seed01.json").write_text("{}\n")  # not run 1's
    subprocess.run(records.RunFiles(directory, 1, 0).removal_command(), shell=True, check=True)
    assert sorted(path.name for path in directory.iterdir()) == [
        "ckpt_hpcomb_4_seed0.pt", "ckpt_hpcomb_5_seed0.pt", "done_hpcomb_0_seed0", "done_hpcomb_2_seed0",
        "done_hpcomb_3_seed0", "results_hpcomb_0_seed0.json", "results_hpcomb_1_seed01.json",
        "results_hpcomb_2_seed0.json", "results_hpcomb_4_seed0.json", "results_hpcomb_6_seed0.json"]


def test_a_folder_of_runs_without_records_is_listed_not_refused(script, tmp_path):
    directory = tmp_path / "ERM" / "Synthetic" / "group_labels_yes"
    directory.mkdir(parents=True)
    (directory / "done_hpcomb_0_seed0").write_text("")
    assert [run.problem.split(";")[0] for run in broken_runs(directory, collect_runs(directory))] == [
        "it has a done file but no results file"]
    result = script("XRM/read_results.py", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:3] == [
        "== ERM / Synthetic / group_labels_yes  (no records to select from)", "not selected (1):"]


def test_reproduce_reads_phase_1_records_that_are_no_records(tmp_path, capsys):
    from test_reproduce import make_features, reproduce_args, reproduce_here

    data, out = make_features(tmp_path / "tiny.pt"), tmp_path / "out"
    directory = out / "XRM" / "tiny" / "group_labels_no"
    header = {"hparams": {"lr": 0.01}}  # the command's lr: runs it skips as done (another lr: it refuses them)
    _phase_1_run(directory, 0, [header, {"step": 0, "flip_rate": 0.0}, {"step": 80, "flip_rate": 0.2}])
    _phase_1_run(directory, 1, [header, {"step": 0, "flip_rate": 0.0}, '{"step": null, "flip_rate": 0.9}',
                                '{"step": 80, "flip_rate": "high"}'])
    for comb in (0, 1):
        (directory / f"done_hpcomb_{comb}_seed0").write_text("")
    assert reproduce_here(reproduce_args(data, out, "--dry_run")) == 0
    output = capsys.readouterr()
    assert output.out.splitlines()[:2] == [
        "stage 1/4 phase 1 (XRM): 2 runs, 2 done, 0 to run",
        "stage 2/4 phase 2 sweeps (MAT on group_labels_yes, ERM on group_labels_yes, GroupDRO on "
        "group_labels_inferred): "
        "6 runs, 0 done, 6 to run"]
    assert f"warning: skipping line 4 of {directory / 'results_hpcomb_1_seed0.json'}: its flip_rate \"high\" is not " \
           "a number" in output.err


def test_a_runs_progress_is_its_last_whole_record_and_its_num_steps(tmp_path, monkeypatch):
    header = {"hparams": {"num_steps": 301}}
    folder = tmp_path / "run"
    assert records.progress(folder / "results_hpcomb_0_seed0.json") is None  # no file
    assert records.progress(_write(folder, 0, [header])) is None  # no record yet
    path = _write(folder, 1, [header, _record(0, 0.5), _record(100, 0.6), '{"step": 200, "va_w'])
    assert records.progress(path) == (100, 301)  # a last line cut short by a kill is not a record
    assert records.progress(_write(folder, 2, [{"hparams": {}}, _record(0, 0.5)])) is None  # no num_steps
    monkeypatch.setattr(records, "TAIL_BYTES", 150)  # a long file: only its end is read
    long = _write(folder, 3, [header, *(_record(step, 0.5) for step in range(0, 301, 10))])
    assert records.progress(long) == (300, 301) and long.stat().st_size > 10 * 150
