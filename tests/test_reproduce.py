"""reproduce.py end to end on a small features file the test makes: 2 combinations, 2 seeds, MAT ERM
GroupDRO; its tables against read_results, its plots, a relaunch, a kill between stages."""
import csv
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_script
from PIL import Image

import mat  # noqa: F401  (registers MAT, as reproduce.py's import does)
from XRM.cli import reproduce_command
from XRM.cli.entry_point import call_main
from XRM.results.plots import curves_size, flip_rate_size, groups_size

ALGORITHMS = ["MAT", "ERM", "GroupDRO"]
# each (algorithm, setting) -> the group-label folder it is read from (what the algorithms declare decides)
EXPECTED_FOLDERS = {("MAT", "va_wga"): "yes", ("MAT", "va_gi_wga"): "yes", ("ERM", "va_wga"): "yes",
                    ("ERM", "va_gi_wga"): "yes", ("GroupDRO", "va_wga"): "inferred",
                    ("GroupDRO", "va_gi_wga"): "inferred"}
SHORT = '{"num_steps": 81, "eval_every": 20, "lr": 0.01}'
SWEEPS_TITLE = "phase 2 sweeps (MAT on group_labels_yes, ERM on group_labels_yes, GroupDRO on group_labels_inferred)"


def make_features(path, seed=0, n=(400, 200, 200), noise_dims=40, core_noise=0.0):
    """A features.pt in the real format: a core feature (+-1, plus Gaussian noise of std ``core_noise``), a
    spurious one (+-5) agreeing with the label for 90% of training and 50% of validation and test examples,
    and noise to memorise with."""
    generator = torch.Generator().manual_seed(seed)
    splits = {}
    for name, size, agree in zip(("tr", "va", "te"), n, (0.9, 0.5, 0.5)):
        y = torch.randint(0, 2, (size,), generator=generator)
        a = (torch.rand(size, generator=generator) >= agree).long()  # 1: the minority, spurious sign flipped
        sign = 1.0 - 2.0 * y.float()
        spurious = 5 * sign * (1 - 2 * a.float())
        core = sign + core_noise * torch.randn(size, generator=generator) if core_noise else sign
        x = torch.cat([core[:, None], spurious[:, None], 0.5 * torch.randn(size, noise_dims, generator=generator)], 1)
        splits[name] = {"x": x, "y": y[:, None], "m": a[:, None]}
    torch.save(splits, path)
    return path


def reproduce_args(data, out, *extra):
    """reproduce.py's command line for the test's protocol on ``data``."""
    return ["reproduce.py", "--datasets", str(data), "--algorithms", *ALGORITHMS, "--num_hparams_combs", "2",
            "--num_seeds", "2", "--out_dir", str(out), "--hparams", SHORT, "--checkpoint_seconds", "0", *extra]


def reproduce_here(args: list[str]) -> int:
    """reproduce.py's main in this process (torch is loaded already: no start-up to wait for); its exit status."""
    return call_main(reproduce_command.main, reproduce_command.get_args_parser().parse_args(args[1:]))


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    """The protocol run once; (features file, out_dir, its stdout)."""
    folder = tmp_path_factory.mktemp("reproduce")
    data = make_features(folder / "tiny.pt")
    result = run_script(*reproduce_args(data, folder / "out"))
    assert result.returncode == 0, result.stderr
    return data, folder / "out", result.stdout


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _read_results_summary(out, algorithm, kind, criterion):
    """(te_wga mean, std, te_avg_acc mean, std, seeds) as read_results prints them."""
    result = run_script("XRM/read_results.py", "--dir", str(out), "--datasets", "tiny", "--algorithms", algorithm,
                        "--group_labels", kind, "--selection_criterion", criterion)
    assert result.returncode == 0, result.stderr
    assert f"== {algorithm} / tiny / group_labels_{kind}  (phase 2, selected by {criterion})" in result.stdout
    match = re.search(r"over (\d+) seed\(s\): te_wga ([0-9.]+) \+/- ([0-9.]+), te_avg_acc ([0-9.]+) \+/- ([0-9.]+)",
                      result.stdout)
    return [float(value) for value in match.groups()[1:]], int(match.group(1))


def test_stages_report_progress_and_the_csv_equals_read_results(protocol):
    _, out, stdout = protocol
    stages = [line for line in stdout.splitlines() if line.startswith("stage ")]
    assert [line.split(":")[0] for line in stages] == [
        "stage 1/4 phase 1 (XRM)",
        f"stage 2/4 {SWEEPS_TITLE}", "stage 3/4 2 seeds of each setting's selected combination",
        "stage 4/4 tables and plots"]
    assert stages[0].endswith("2 runs, 0 done, 2 to run") and stages[1].endswith("6 runs, 0 done, 6 to run")
    rows = _csv_rows(out / "table1.csv")
    assert list(rows[0]) == ["dataset", "algorithm", "selection", "n_seeds", "te_wga_mean", "te_wga_std",
                             "te_avg_mean", "te_avg_std"]
    assert [(row["algorithm"], row["selection"]) for row in rows] == [
        (algorithm, setting) for setting in ("va_wga", "va_gi_wga") for algorithm in ALGORITHMS]
    for row in rows:
        printed, seeds = _read_results_summary(out, row["algorithm"], EXPECTED_FOLDERS[row["algorithm"], row["selection"]],
                                               row["selection"])
        assert row["dataset"] == "tiny" and int(row["n_seeds"]) == seeds == 2
        ours = [float(row[key]) for key in ("te_wga_mean", "te_wga_std", "te_avg_mean", "te_avg_std")]
        assert ours == pytest.approx(printed, abs=0.05 + 1e-9), row  # read_results prints one decimal, the CSV two
        assert 0 <= ours[0] <= ours[2] <= 100  # the worst group is no better than the average


def test_markdown_and_latex_cells_hold_the_csv_numbers(protocol):
    _, out, _ = protocol
    rows = _csv_rows(out / "table1.csv")
    markdown = (out / "table1.md").read_text()
    blocks = markdown.split("\n## ")[1:]
    assert [block.splitlines()[0] for block in blocks] == ["Validation groups known (selection by va_wga)",
                                                           "No group labels (selection by va_gi_wga)"]
    latex = (out / "table1.tex").read_text()
    assert latex.startswith("\\documentclass{article}") and latex.rstrip().endswith("\\end{document}")
    assert latex.count("{") == latex.count("}") and "\\usepackage{booktabs}" in latex
    assert "\\begin{tabular}{lrrrr}" in latex and latex.count("\\toprule") == latex.count("\\bottomrule") == 1
    latex_rows = [line for line in latex.splitlines() if line.split(" & ")[0] in ALGORITHMS]
    for block, setting in zip(blocks, ("va_wga", "va_gi_wga")):
        for row in (row for row in rows if row["selection"] == setting):
            wga = float(row["te_wga_mean"]), float(row["te_wga_std"])
            average = float(row["te_avg_mean"]), float(row["te_avg_std"])
            cells = [f"{average[0]:.1f} ± {average[1]:.1f}", f"{wga[0]:.1f} ± {wga[1]:.1f}"]
            # one dataset: the Average columns repeat its numbers
            assert f"| {row['algorithm']} | " + " | ".join(cells * 2) + " |" in block.splitlines()
            tex = [f"{average[0]:.1f}{{\\scriptsize$\\pm${average[1]:.1f}}}", f"{wga[0]:.1f}{{\\scriptsize$\\pm${wga[1]:.1f}}}"]
            assert " & ".join([row["algorithm"], *tex * 2]) + " \\\\" in latex_rows
    assert len(latex_rows) == 6


def test_plots_are_pngs_of_the_stated_sizes(protocol):
    _, out, _ = protocol
    expected = {"curves_tiny.png": curves_size(2, 3), "groups_tiny.png": groups_size(2),
                "flip_rate_tiny.png": flip_rate_size()}
    assert sorted(path.name for path in (out / "plots").iterdir()) == sorted(expected)
    for name, size in expected.items():
        with Image.open(out / "plots" / name) as image:
            assert (image.format, image.size) == ("PNG", size)
    assert curves_size(2, 3) == (960, 480)


def test_read_results_writes_the_same_tables_and_plots(protocol, tmp_path):
    _, out, _ = protocol
    for suffix in ("csv", "md", "tex"):
        result = run_script("XRM/read_results.py", "--dir", str(out), "--algorithms", *ALGORITHMS, "--table", suffix)
        assert result.returncode == 0, result.stderr
        assert result.stdout == (out / f"table1.{suffix}").read_text()
    result = run_script("XRM/read_results.py", "--dir", str(out), "--plots", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curves_tiny.png", "flip_rate_tiny.png",
                                                                "groups_tiny.png"]


def test_records_carry_every_test_groups_accuracy(protocol):
    _, out, _ = protocol
    import json

    lines = (out / "ERM" / "tiny" / "group_labels_yes" / "results_hpcomb_0_seed0.json").read_text().splitlines()
    last = json.loads(lines[-1])
    groups = {key: value for key, value in last.items() if key.startswith("te_acc_group_")}
    assert sorted(groups) == [f"te_acc_group_{group}" for group in range(4)]
    assert last["te_wga"] == min(groups.values())


def test_a_second_run_is_a_no_op(protocol, capsys):
    data, out, _ = protocol
    before = {path: path.stat().st_mtime_ns for path in out.rglob("results_*.json")}
    assert reproduce_here(reproduce_args(data, out)) == 0
    stages = [line for line in capsys.readouterr().out.splitlines() if line.startswith("stage ")]
    assert [line.rsplit(": ", 1)[1] for line in stages[:3]] == [
        "2 runs, 2 done, 0 to run", "6 runs, 6 done, 0 to run", "6 runs, 6 done, 0 to run"]
    assert {path: path.stat().st_mtime_ns for path in out.rglob("results_*.json")} == before


def test_every_stage_waits_for_its_jobs(protocol, monkeypatch):
    """On SLURM a stage must not select from runs still queued: each stage launches with wait=True."""
    from XRM.cli.reproduction import run_protocol
    from XRM.launch import launchers

    waits = []

    def recording(stacks, run_fn, options):
        waits.append(options.wait)
        return launchers.get_launcher("local")(stacks, run_fn, options)

    monkeypatch.setitem(launchers.LAUNCHERS, "recording", recording)
    data, out, _ = protocol
    args = reproduce_command.get_args_parser().parse_args(reproduce_args(data, out)[1:])
    assert run_protocol(reproduce_command.protocol_from_args(args), None, "recording",
                        launchers.LaunchOptions(wait=False)) == 0
    assert waits == [True, True, True]


def test_killed_between_stages_then_run_again_gives_the_same_table(protocol, tmp_path):
    data, full_out, _ = protocol
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, *reproduce_args(data, out)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    for line in process.stdout:
        if line.startswith("stage 2/4"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "table1.csv").exists()
    assert len(list((out / "XRM" / "tiny" / "group_labels_no").glob("done_*"))) == 2
    again = run_script(*reproduce_args(data, out))
    assert again.returncode == 0, again.stderr
    assert "stage 1/4 phase 1 (XRM): 2 runs, 2 done, 0 to run" in again.stdout
    assert (out / "table1.csv").read_text() == (full_out / "table1.csv").read_text()


def test_dry_run_lists_the_stages_and_runs_nothing(tmp_path, capsys):
    data = make_features(tmp_path / "tiny.pt")
    assert reproduce_here(reproduce_args(data, tmp_path / "out", "--dry_run")) == 0
    assert capsys.readouterr().out.splitlines() == [
        "stage 1/4 phase 1 (XRM): 2 runs, 0 done, 2 to run",
        "stage 2/4 phase 2 sweeps (MAT on group_labels_yes, ERM on group_labels_yes, GroupDRO on "
        "group_labels_inferred): "
        "6 runs after stage 1",
        "stage 3/4 2 seeds of each setting's selected combination: at most 12 runs after stage 2 (6 (dataset, "
        "algorithm, setting) cells x 2 seeds)",
        f"stage 4/4 tables and plots: {tmp_path / 'out' / 'table1'}.{{csv,md,tex}} and {tmp_path / 'out' / 'plots'}/"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


@pytest.mark.parametrize("extra, message", [
    (["--algorithms", "XRM"], "error: XRM is phase 1, which python -m XRM.cli reproduce runs itself"),
    (["--algorithms", "MAT", "Nope"], "error: unknown algorithm 'Nope'"),
    (["--datasets", "Waterbirds", "--data_path", "DATA"], "python -m XRM.cli download --features"),
    (["--num_seeds", "0"], "error: --num_seeds 0: give a number >= 1"),
    (["--group_inference", "EIIL"], "error: MAT needs phase 1's held-out logits, which EIIL does not write; leave MAT "
                                    "out of --algorithms, or use --group_inference XRM"),
    (["--group_inference", "GroupDRO"], "error: --group_inference GroupDRO: it is a phase-2 algorithm"),
    (["--group_inference", "Nope"], "error: unknown algorithm 'Nope'"),
])
def test_bad_input_fails_before_stage_1_in_one_line(tmp_path, capsys, extra, message):
    data = make_features(tmp_path / "tiny.pt")
    args = [arg.replace("DATA", str(tmp_path / "data")) for arg in reproduce_args(data, tmp_path / "out") + extra]
    assert reproduce_here(args) == 2
    output = capsys.readouterr()
    assert len(output.err.strip().splitlines()) == 1 and message in output.err, output.err
    assert "stage 1/4" not in output.out and not any(tmp_path.rglob("results_*.json"))


def test_a_last_layer_algorithm_gets_its_base_model_trained_first(tmp_path):
    """AFR retrains the head of an AFRBase run: the protocol trains AFRBase's sweep and seeds before
    AFR's (their folders' kinds match), and Table 1 has a row for AFR only (AFRBase was not asked for)."""
    data = make_features(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    args = ["reproduce.py", "--datasets", str(data), "--algorithms", "AFR", "--num_hparams_combs", "2",
            "--num_seeds", "2", "--out_dir", str(out), "--hparams", SHORT, "--checkpoint_seconds", "0"]
    assert reproduce_here(args) == 0
    for algorithm in ("AFRBase", "AFR"):
        for kind in ("yes", "inferred"):
            folder = out / algorithm / "tiny" / f"group_labels_{kind}"
            assert len(list(folder.glob("done_hpcomb_*_seed0"))) == 2, folder  # the sweep: two combinations
            assert len(list(folder.glob("done_hpcomb_*_seed1"))) >= 1, folder  # the selected one's seed 1
    rows = _csv_rows(out / "table1.csv")
    assert sorted((row["algorithm"], row["selection"]) for row in rows) == [("AFR", "va_gi_wga"), ("AFR", "va_wga")]
    assert all(row["n_seeds"] == "2" for row in rows)


def test_dry_run_on_a_finished_protocol_shows_every_stage_done(protocol, capsys):
    data, out, _ = protocol
    assert reproduce_here(reproduce_args(data, out, "--dry_run")) == 0
    lines = capsys.readouterr().out.splitlines()
    counts = [re.search(r": (\d+) runs, (\d+) done, (\d+) to run$", line) for line in lines[:3]]
    assert all(counts) and [match.groups()[2] for match in counts] == ["0", "0", "0"]
    assert [int(match.group(1)) for match in counts[:2]] == [2, 6]  # 2 phase-1 combinations; 3 sweeps x 2


def _record_another_dtype(results_file) -> None:
    """Rewrite a finished run's results header as if it had trained in float64."""
    header, *records = results_file.read_text().splitlines()
    header = json.loads(header)
    header["identity"]["dtype"] = "float64"
    results_file.write_text("\n".join([json.dumps(header), *records]) + "\n")


def test_dry_run_counts_the_runs_launching_would_refuse_apart_from_those_done(protocol, tmp_path, capsys):
    data, full_out, _ = protocol
    out = tmp_path / "out"
    shutil.copytree(full_out, out)
    folder = out / "XRM" / "tiny" / "group_labels_no"
    _record_another_dtype(folder / "results_hpcomb_1_seed0.json")
    refusal = (f"XRM/tiny/group_labels_no/hpcomb_1_seed0 finished as another run: its results record dtype "
               f"'float64' -> 'float32'; use another --out_dir, or delete its files in {folder} to train this one")
    assert reproduce_here(reproduce_args(data, out, "--dry_run")) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"stage 1/4 phase 1 (XRM): 2 runs, 1 done, 1 refused (first: {refusal}), 0 to run")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert reproduce_here(reproduce_args(data, out)) == 2  # launching refuses it, in the same line
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {refusal}"
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_table_1_is_printed_when_the_protocol_ends(protocol):
    _, out, stdout = protocol
    table = stdout.split("stage 4/4", 1)[1]
    markdown = (out / "table1.md").read_text().strip()
    assert markdown.splitlines()[0] in table and markdown.splitlines()[-1] in table


def test_a_second_protocol_on_the_folder_is_refused_while_one_runs(protocol, tmp_path):
    from XRM.runs.lock import try_lock, unlock

    data, _, _ = protocol
    out = tmp_path / "out"
    out.mkdir()
    handle = try_lock(out / ".lock_reproduce")  # as a reproduce.py still running would hold it
    try:
        result = run_script(*reproduce_args(data, out))
    finally:
        unlock(handle)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: another reproduce command is running on {out}: wait for it to end, or give another --out_dir"]
    assert not (out / "XRM").exists()


def test_a_folder_missing_a_seed_gives_no_table(protocol, tmp_path, capsys):
    data, full_out, _ = protocol
    out = tmp_path / "out"
    shutil.copytree(full_out, out)
    (out / "table1.csv").unlink()
    folder = out / "MAT" / "tiny" / "group_labels_yes"
    seed_1 = sorted(folder.glob("results_hpcomb_*_seed1.json"))
    assert len(seed_1) == 1
    seed_1[0].unlink()  # its done file is kept: the launcher skips it, the table must not count it
    assert reproduce_here(reproduce_args(data, out)) == 1
    errors = capsys.readouterr().err
    assert f"incomplete: {folder}: combination" in errors and "has 1 of the 2 seeds finished" in errors
    assert "missing: 1" in errors and "Table 1 not written" in errors
    assert not (out / "table1.csv").exists()


EIIL_SHORT = '{"num_steps": 81, "eval_every": 20, "lr": 0.003, "eiil_steps": 300}'  # an underfit reference model


def test_an_eiil_based_protocol_runs_end_to_end(tmp_path, capsys):
    """--group_inference EIIL: phase 1 is EIIL's, GroupDRO trains on its groups and ERM is selected by
    them; the table's rows, folders and footers say so (and there is no flip-rate plot: EIIL has none)."""
    data = make_features(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    args = ["reproduce.py", "--datasets", str(data), "--algorithms", "ERM", "GroupDRO", "--group_inference", "EIIL",
            "--num_hparams_combs", "2", "--num_seeds", "2", "--out_dir", str(out), "--hparams", EIIL_SHORT,
            "--checkpoint_seconds", "0"]
    assert reproduce_here(args) == 0
    printed = capsys.readouterr().out
    assert "stage 1/4 phase 1 (EIIL): 2 runs, 0 done, 2 to run" in printed
    assert "phase 2 sweeps (ERM on group_labels_yes, GroupDRO on group_labels_inferred)" in printed
    assert not (out / "XRM").exists()
    phase_1 = out / "EIIL" / "tiny" / "group_labels_no"
    assert len(list(phase_1.glob("inferred_hpcomb_*_seed0.pt"))) == 2
    # every run read EIIL's file: GroupDRO's groups, ERM's inferred validation groups
    for algorithm, kind, key in (("ERM", "yes", "phase_1_file"), ("GroupDRO", "inferred", "group_labels")):
        folder = out / algorithm / "tiny" / f"group_labels_{kind}"
        headers = [json.loads(path.read_text().splitlines()[0]) for path in folder.glob("results_*.json")]
        assert headers and all(Path(header[key]).parent == phase_1 for header in headers)
    rows = _csv_rows(out / "table1.csv")
    assert sorted((row["algorithm"], row["selection"], row["n_seeds"]) for row in rows) == [
        ("ERM", "va_gi_wga", "2"), ("ERM", "va_wga", "2"), ("GroupDRO", "va_gi_wga", "2"), ("GroupDRO", "va_wga", "2")]
    assert all(0 <= float(row["te_wga_mean"]) <= float(row["te_avg_mean"]) <= 100 for row in rows)
    worst = {row["algorithm"]: float(row["te_wga_mean"]) for row in rows if row["selection"] == "va_gi_wga"}
    assert worst["GroupDRO"] > worst["ERM"] + 50, worst  # measured: GroupDRO 100.0, ERM 0.0 (EIIL's groups)
    markdown = (out / "table1.md").read_text()
    assert "No group labels (selection by va_gi_wga): groups = (class, attribute inferred by EIIL in phase 1); " \
           "evaluated on the annotated test groups; selected by va_gi_wga, the worst-group validation accuracy over " \
           "the EIIL-inferred validation groups" in markdown
    assert "train with the EIIL-inferred training groups" in (out / "table1.tex").read_text()
    assert markdown in printed  # the printed table is the written one, footers included
    assert sorted(path.name for path in (out / "plots").glob("*.png")) == ["curves_tiny.png", "groups_tiny.png"]


def test_a_folder_of_one_group_inference_refuses_the_other(protocol, capsys):
    """The XRM protocol's --out_dir holds XRM's phase 1: an EIIL protocol there is one line, nothing trained."""
    data, out, _ = protocol
    before = sorted(out.rglob("*.json"))
    args = ["reproduce.py", "--datasets", str(data), "--algorithms", "ERM", "--group_inference", "EIIL",
            "--num_hparams_combs", "2", "--num_seeds", "2", "--out_dir", str(out), "--hparams", EIIL_SHORT]
    assert reproduce_here(args) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {out} holds a protocol built on XRM's groups") and "another --out_dir" in line
    assert sorted(out.rglob("*.json")) == before and not (out / "EIIL").exists()


def _status(args: list[str], capsys) -> list[str]:
    """reproduce.py --status's lines (exit status 0)."""
    assert reproduce_here([*args, "--status"]) == 0
    return capsys.readouterr().out.splitlines()


SEEDS_TITLE = "2 seeds of each setting's selected combination"


def test_status_before_the_protocol_starts_lists_stage_1_and_writes_nothing(tmp_path, capsys):
    data = make_features(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    assert _status(reproduce_args(data, out), capsys) == [
        f"no reproduce command is running on {out}; run the same command without --status to go on",
        "stage 1/4 phase 1 (XRM): 2 runs: 0 done, 0 running, 0 pending, 0 failed, 0 stopped, 2 not launched",
        f"stage 2/4 {SWEEPS_TITLE}: waits for the stages above",
        f"stage 3/4 {SEEDS_TITLE}: waits for the stages above",
        "stage 4/4 tables and plots: not written yet"]
    assert not out.exists()


def test_status_of_a_finished_protocol_counts_every_run_done(protocol, capsys):
    data, out, _ = protocol
    assert _status(reproduce_args(data, out), capsys) == [
        f"no reproduce command is running on {out}",
        "stage 1/4 phase 1 (XRM): 2 runs: 2 done, 0 running, 0 pending, 0 failed, 0 stopped, 0 not launched",
        f"stage 2/4 {SWEEPS_TITLE}: 6 runs: 6 done, 0 running, 0 pending, 0 failed, 0 stopped, 0 not launched",
        # seeds 0 and 1 of the combination both settings select in each of the 3 folders
        f"stage 3/4 {SEEDS_TITLE}: 6 runs: 6 done, 0 running, 0 pending, 0 failed, 0 stopped, 0 not launched",
        f"stage 4/4 tables and plots: {out / 'table1.csv'}, {out / 'table1.md'}, {out / 'table1.tex'}"]


def test_status_while_a_protocol_runs_names_the_runs_being_trained_and_those_stopped(protocol, tmp_path, capsys):
    from XRM.runs.lock import try_lock, unlock

    data, full_out, _ = protocol
    out = tmp_path / "out"
    shutil.copytree(full_out, out)
    for path in out.glob("table1.*"):
        path.unlink()
    mat = out / "MAT" / "tiny" / "group_labels_yes"
    (trained,) = mat.glob("done_hpcomb_*_seed1")
    trained.unlink()  # as if seed 1 were being trained now
    name = trained.name.removeprefix("done_")
    erm = out / "ERM" / "tiny" / "group_labels_yes"
    (stopped,) = erm.glob("done_hpcomb_*_seed1")
    stopped.unlink()  # as if a process training seed 1 had been killed (its results file stays)
    # as the reproduce.py still running, and the process training MAT's seed 1, hold them
    handles = [try_lock(out / ".lock_reproduce"), try_lock(mat / f".lock_{name}")]
    try:
        lines = _status(reproduce_args(data, out), capsys)
    finally:
        for handle in handles:
            unlock(handle)
    assert lines[0] == f"a reproduce command is running on {out}"
    assert lines[3:] == [
        f"stage 3/4 {SEEDS_TITLE}: 6 runs: 4 done, 1 running, 0 pending, 0 failed, 1 stopped, 0 not launched",
        # how far each got: its last record (81 steps, evaluated every 20: the last at step 80)
        f"  running  MAT/tiny/group_labels_yes/{name}  (last evaluation at step 80 of 81)",
        f"  stopped  ERM/tiny/group_labels_yes/{stopped.name.removeprefix('done_')}  (last evaluation at step 80 of 81)"
        "  started, not finished, and no process trains it; run its command again to resume it",
        "stage 4/4 tables and plots: not written yet"]


def test_a_stage_whose_inputs_failed_above_stops_in_one_line(tmp_path, capsys):
    """Every phase-1 run diverges: stage 2, which reads phase 1's best run, does not start; the line says
    why (not how to run phase 1 by hand), and --status shows the stopped runs."""
    data = make_features(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    args = ["reproduce.py", "--datasets", str(data), "--algorithms", "ERM", "--num_hparams_combs", "2", "--num_seeds",
            "2", "--out_dir", str(out), "--hparams", '{"num_steps": 81, "eval_every": 20, "lr": 1e30}']
    assert reproduce_here(args) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "stage 2/4 phase 2 sweeps (ERM on group_labels_yes) cannot start: 2 runs above failed (listed above); run the "
        "same command again to retry them")
    lines = _status(args, capsys)
    assert lines[1] == "stage 1/4 phase 1 (XRM): 2 runs: 0 done, 0 running, 0 pending, 0 failed, 2 stopped, 0 not launched"
    assert [line.split()[:2] for line in lines[2:4]] == [["stopped", f"XRM/tiny/group_labels_no/hpcomb_{k}_seed0"]
                                                         for k in (0, 1)]
    assert lines[4:6] == ["stage 2/4 phase 2 sweeps (ERM on group_labels_yes): waits for the stages above",
                          f"stage 3/4 {SEEDS_TITLE}: waits for the stages above"]


def _folders(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir())


def test_an_algorithm_without_groups_trains_one_sweep_for_both_settings_and_the_table_is_the_same(tmp_path):
    """ERM's runs given true group labels also read phase 1's inferred validation groups: one sweep serves
    both settings. A folder whose ERM runs were trained without them (main.py, an earlier reproduce.py) keeps
    its two sweeps, its finished runs reused; both give the same Table 1."""
    data = make_features(tmp_path / "noisy.pt", core_noise=1.5)  # ERM leans on the spurious feature
    one, two = tmp_path / "one", tmp_path / "two"

    def args(out: Path) -> list[str]:
        return ["reproduce.py", "--datasets", str(data), "--algorithms", "ERM", "JTT", "MAT", "--num_hparams_combs",
                "3", "--num_seeds", "2", "--out_dir", str(out), "--hparams", SHORT, "--checkpoint_seconds", "0"]

    assert reproduce_here(args(one)) == 0
    earlier = run_script("main.py", "--phase", "2", "--datasets", str(data), "--algorithms", "ERM", "JTT",
                         "--group_labels", "yes", "--num_hparams_combs", "3", "--out_dir", str(two), "--hparams",
                         SHORT, "--checkpoint_seconds", "0")
    assert earlier.returncode == 0, earlier.stderr
    assert reproduce_here(args(two)) == 0
    for algorithm in ("ERM", "JTT"):  # JTT too trains with no groups (its error set: what its first model gets wrong)
        assert _folders(one / algorithm / "noisy") == ["group_labels_yes"]
        assert _folders(two / algorithm / "noisy") == ["group_labels_inferred", "group_labels_yes"]
    assert (one / "table1.csv").read_text() == (two / "table1.csv").read_text()
    rows = {(row["algorithm"], row["selection"]): float(row["te_wga_mean"]) for row in _csv_rows(one / "table1.csv")}
    assert rows[("ERM", "va_wga")] < 90 and rows[("MAT", "va_wga")] > rows[("ERM", "va_wga")], rows  # not a tie
    folder = one / "ERM" / "noisy" / "group_labels_yes"
    for path in folder.glob("results_*.json"):
        header, records = json.loads(path.read_text().splitlines()[0]), path.read_text().splitlines()[1:]
        assert Path(header["phase_1_file"]).parent == one / "XRM" / "noisy" / "group_labels_no"
        assert all("va_gi_wga" in json.loads(line) for line in records)
    for path in folder.glob("best_hpcomb_*.pt"):  # the folder's own criterion picks a run's best checkpoint
        assert torch.load(path, weights_only=True)["metric"] == "va_wga"


def test_a_dependent_added_later_reuses_the_one_sweep_and_trains_its_base_in_the_other_folder(tmp_path, capsys):
    """ERM first trained once for both settings; DFR added to the same folder needs ERM's runs as bases in each
    setting's folder: ERM's finished runs are kept (they read the phase-1 file), its no-labels sweep is trained."""
    data = make_features(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    first = reproduce_args(data, out)
    first[first.index("--algorithms") + 1 : first.index("--num_hparams_combs")] = ["ERM"]
    assert reproduce_here(first) == 0
    kept = {path: path.read_bytes() for path in (out / "ERM" / "tiny" / "group_labels_yes").glob("results_*.json")}
    assert _folders(out / "ERM" / "tiny") == ["group_labels_yes"] and len(kept) >= 2
    second = reproduce_args(data, out)
    second[second.index("--algorithms") + 1 : second.index("--num_hparams_combs")] = ["ERM", "DFR"]
    assert reproduce_here(second) == 0, capsys.readouterr().err
    assert _folders(out / "ERM" / "tiny") == ["group_labels_inferred", "group_labels_yes"]
    assert all(path.read_bytes() == content for path, content in kept.items())  # not trained again
    rows = _csv_rows(out / "table1.csv")
    assert sorted((row["algorithm"], row["selection"]) for row in rows) == [
        ("DFR", "va_gi_wga"), ("DFR", "va_wga"), ("ERM", "va_gi_wga"), ("ERM", "va_wga")]


def test_read_results_asked_for_a_folder_a_one_sweep_algorithm_lacks_says_where_its_runs_are(protocol):
    _, out, _ = protocol
    result = run_script("XRM/read_results.py", "--dir", str(out), "--algorithms", "ERM", "--group_labels", "inferred")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no results found under {out} for the datasets, algorithms and group labels asked for; ERM's runs "
        "for both settings are in ERM/tiny/group_labels_yes (they record va_gi_wga): --group_labels yes "
        "--selection_criterion va_gi_wga"]
    summary, seeds = _read_results_summary(out, "ERM", "yes", "va_gi_wga")  # and there they are
    assert seeds == 2 and len(summary) == 4
