"""End to end through the command lines: phase 1 -> phase 2 (MAT, ERM, GroupDRO) -> read_results."""
import json
import re
from pathlib import Path

import pytest
import torch

SHORT = '{"num_steps": 301}'


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def _best_test_wga(read_results_output: str, algorithm: str) -> float:
    section = read_results_output.split(f"== {algorithm} / Synthetic")[1]
    return float(re.search(r"te_wga ([0-9.]+) \+/-", section).group(1))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Phase 1 then phase 2 on the built-in dataset, shortened; returns the output folder and outputs."""
    from conftest import run_script

    out = tmp_path_factory.mktemp("sweep") / "out"
    common = ["--datasets", "Synthetic", "--num_hparams_combs", "2", "--out_dir", str(out), "--hparams", SHORT]
    phase_1 = run_script("main.py", "--phase", "1", *common)
    assert phase_1.returncode == 0, phase_1.stderr
    phase_2 = run_script("main.py", "--phase", "2", "--algorithms", "MAT", "ERM", "--group_labels", "no", *common)
    assert phase_2.returncode == 0, phase_2.stderr
    return out, common


def test_phase_1_writes_records_and_inferred_groups(sweep):
    out, _ = sweep
    directory = out / "XRM" / "Synthetic" / "group_labels_no"
    for comb in (0, 1):
        for name in (f"results_hpcomb_{comb}_seed0.json", f"ckpt_hpcomb_{comb}_seed0.pt", f"done_hpcomb_{comb}_seed0"):
            assert (directory / name).is_file(), name
        run_records = _records(directory / f"results_hpcomb_{comb}_seed0.json")
        assert [r["step"] for r in run_records] == list(range(0, 301, 50))
        assert all(set(r) == {"step", "flip_rate", "train_loss", "lr", "steps_per_s", "examples_per_s"}
                   for r in run_records)
        header = json.loads((directory / f"results_hpcomb_{comb}_seed0.json").read_text().splitlines()[0])
        assert all(r["lr"] == header["hparams"]["lr"] for r in run_records)  # SGD at a constant rate
        # each evaluation's throughput: steps per second since the last one, examples = batch size x steps
        batch_size = header["hparams"]["batch_size"]
        assert all(r["steps_per_s"] > 0 and r["examples_per_s"] == pytest.approx(r["steps_per_s"] * batch_size)
                   for r in run_records)
        # the twins' class-balanced loss: the sum over the 2 classes of a mean cross-entropy, ln 2 each at first
        assert 0 < run_records[-1]["train_loss"] < run_records[0]["train_loss"] <= 2 * 0.6932
    inferred = torch.load(directory / "inferred_hpcomb_0_seed0.pt")
    assert inferred["tr"].shape == (1000,) and inferred["va"].shape == (1000,)
    assert inferred["tr_ho"].shape == (1000, 2) and inferred["tr_ho"].dtype == torch.float32
    # the synthetic minority is 10% of training examples: XRM finds it
    assert 0.05 <= inferred["tr"].float().mean().item() <= 0.2


def test_phase_2_records_and_mat_beats_erm(sweep, script):
    out, _ = sweep
    mat_dir = out / "MAT" / "Synthetic" / "group_labels_no"
    header = json.loads((mat_dir / "results_hpcomb_0_seed0.json").read_text().splitlines()[0])
    assert header["hparams"]["tau"] in (0.001, 0.01, 0.1) and header["algorithm"] == "MAT"
    per_group = {f"te_acc_group_{group}" for group in range(4)}  # the Synthetic test groups y * 2 + a
    assert set(_records(mat_dir / "results_hpcomb_0_seed0.json")[0]) == {
        "step", "va_avg_acc", "va_wga", "va_gi_wga", "va_neg_class_diff", "te_avg_acc", "te_wga", "train_loss",
        "lr", "steps_per_s", "examples_per_s"} | per_group
    erm_dir = out / "ERM" / "Synthetic" / "group_labels_no"
    last = _records(erm_dir / "results_hpcomb_1_seed0.json")[-1]
    assert set(last) == {"step", "va_avg_acc", "va_wga", "va_neg_class_diff", "te_avg_acc", "te_wga", "train_loss",
                         "lr", "steps_per_s", "examples_per_s"} | per_group
    assert last["te_wga"] == min(last[key] for key in per_group)
    assert (mat_dir / "best_hpcomb_0_seed0.pt").is_file()
    table = script("XRM/read_results.py", "--dir", str(out), "--group_labels", "no")
    assert table.returncode == 0, table.stderr
    assert _best_test_wga(table.stdout, "MAT") > _best_test_wga(table.stdout, "ERM") + 30
    # a phase-2 criterion selects the phase-2 tables; the phase-1 table keeps flip_rate
    by_inferred = script("XRM/read_results.py", "--dir", str(out), "--selection_criterion", "va_gi_wga")
    assert by_inferred.returncode == 0, by_inferred.stderr
    assert "== MAT / Synthetic / group_labels_no  (phase 2, selected by va_gi_wga)" in by_inferred.stdout
    assert "== ERM / Synthetic / group_labels_no  (phase 2, selected by va_wga)" in by_inferred.stdout  # has no va_gi_wga
    assert "== XRM / Synthetic / group_labels_no  (phase 1, selected by flip_rate)" in by_inferred.stdout


def test_relaunch_is_a_no_op(sweep, script):
    out, common = sweep
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = script("main.py", "--phase", "2", "--algorithms", "MAT", "ERM", "--group_labels", "no", *common)
    assert again.returncode == 0
    assert "local: launched 0 runs, 4 skipped (done)" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_group_dro_on_inferred_groups_from_a_phase_1_folder(sweep, script):
    out, common = sweep
    result = script("main.py", "--phase", "2", "--algorithms", "GroupDRO", "--group_labels", str(out / "XRM"),
                    "--hparams_comb", "0", "--datasets", "Synthetic", "--out_dir", str(out), "--hparams", SHORT)
    assert result.returncode == 0, result.stderr
    run_records = _records(out / "GroupDRO" / "Synthetic" / "group_labels_inferred" / "results_hpcomb_0_seed0.json")
    assert "va_gi_wga" in run_records[-1]


def test_the_folder_loads_as_one_dataframe_equal_to_its_json_lines(sweep):
    from XRM.results.frame import load_records

    out, _ = sweep
    frame = load_records(out, algorithms=["XRM", "MAT", "ERM"])
    runs = [path for algorithm in ("XRM", "MAT", "ERM")
            for path in out.glob(f"{algorithm}/Synthetic/group_labels_*/results_hpcomb_*_seed*.json")]
    assert len(frame) == sum(len(_records(path)) for path in runs)
    assert sorted(frame.algorithm.unique()) == ["ERM", "MAT", "XRM"] and frame.finished.all()
    mat = frame[(frame.algorithm == "MAT") & (frame.hpcomb == 1) & (frame.seed == 0)]
    expected = _records(out / "MAT" / "Synthetic" / "group_labels_no" / "results_hpcomb_1_seed0.json")
    assert mat.group_labels.unique().tolist() == ["no"]
    for column in ("step", "va_wga", "va_gi_wga", "te_wga", "te_avg_acc", "te_acc_group_3"):
        # a null test metric (not evaluated there: no selection rule looks) is NaN in the frame
        assert [None if value != value else value for value in mat[column].tolist()] == [
            record[column] for record in expected], column
    phase_1 = frame[frame.algorithm == "XRM"]
    assert phase_1.flip_rate.notna().all() and phase_1.te_wga.isna().all()


def test_headers_name_the_test_groups_the_records_number(sweep):
    out, _ = sweep
    header = json.loads((out / "MAT" / "Synthetic" / "group_labels_no" / "results_hpcomb_0_seed0.json")
                        .read_text().splitlines()[0])
    groups = header["test_groups"]
    assert sorted(groups) == ["0", "1", "2", "3"]  # y * 2 + a on the Synthetic test split
    assert all(int(g) == entry["y"] * 2 + entry["a"] for g, entry in groups.items())
    assert sum(entry["n"] for entry in groups.values()) == 1000
