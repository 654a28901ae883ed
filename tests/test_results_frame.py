"""XRM/results/frame.py: a results folder in the reference code's layout as one DataFrame."""
import json
import math

import pandas as pd

from XRM.results.frame import RUN_COLUMNS, load_records


def _write(folder, comb, seed, header, lines):
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line) + "\n" for line in [header, *lines])
    (folder / f"results_hpcomb_{comb}_seed{seed}.json").write_text(text)


def _reference_folder(root):
    """As the reference code leaves it: a header of hyper-parameters (no done file named), one
    record per evaluation; a phase-1 folder (flip rates) and a phase-2 one (accuracies)."""
    xrm = root / "XRM" / "Waterbirds" / "group_labels_no"
    _write(xrm, 0, 0, {"hparams": {"lr": 0.001}}, [{"step": 0, "flip_rate": 0.0}, {"step": 50, "flip_rate": 0.12}])
    _write(xrm, 1, 0, {"hparams": {"lr": 0.01}}, [{"step": 0, "flip_rate": 0.0}, {"step": 50, "flip_rate": 0.31}])
    dro = root / "GroupDRO" / "Waterbirds" / "group_labels_inferred"
    _write(dro, 0, 2, {"hparams": {"lr": 0.001, "eta": 0.01}},
           [{"step": 0, "va_avg_acc": 0.5, "va_wga": 0.1, "te_avg_acc": 0.55, "te_wga": 0.2},
            {"step": 50, "va_avg_acc": 0.8, "va_wga": 0.6, "te_avg_acc": 0.85, "te_wga": 0.7},
            {"step": 100, "va_avg_acc": 0.9, "va_wga": 0.75, "te_avg_acc": 0.88, "te_wga": 0.72}])
    return root


def test_a_reference_folder_loads_one_row_per_evaluation(tmp_path):
    frame = load_records(_reference_folder(tmp_path))
    assert list(frame.columns[:7]) == [*RUN_COLUMNS, "step"]
    assert len(frame) == 7  # 2 + 2 phase-1 evaluations, 3 phase-2 ones
    assert frame.finished.all()  # the reference writes no done files: its runs are taken as read_results takes them
    dro = frame[frame.algorithm == "GroupDRO"]
    assert dro.group_labels.unique().tolist() == ["inferred"] and dro.seed.unique().tolist() == [2]
    assert dro.step.tolist() == [0, 50, 100]
    assert dro.te_wga.tolist() == [0.2, 0.7, 0.72] and dro.va_wga.tolist() == [0.1, 0.6, 0.75]
    assert dro.flip_rate.isna().all()  # a phase-2 run records no flip rate
    xrm = frame[frame.algorithm == "XRM"]
    assert xrm.hpcomb.tolist() == [0, 0, 1, 1] and xrm.flip_rate.tolist() == [0.0, 0.12, 0.0, 0.31]
    assert xrm.te_wga.isna().all()


def test_the_frame_answers_a_notebook_question(tmp_path):
    frame = load_records(_reference_folder(tmp_path))
    last = frame.groupby(["algorithm", "hpcomb", "seed"]).step.max()
    assert last.to_dict() == {("GroupDRO", 0, 2): 100, ("XRM", 0, 0): 50, ("XRM", 1, 0): 50}
    best = frame[frame.algorithm == "GroupDRO"].sort_values("va_wga").iloc[-1]
    assert (best.step, best.te_wga) == (100, 0.72)


def test_filters_and_an_empty_folder(tmp_path):
    root = _reference_folder(tmp_path / "out")
    assert load_records(root, algorithms=["XRM"]).algorithm.unique().tolist() == ["XRM"]
    assert load_records(root, datasets=["CelebA"]).empty
    empty = load_records(tmp_path / "nothing")
    assert isinstance(empty, pd.DataFrame) and empty.empty and list(empty.columns) == [*RUN_COLUMNS, "step"]


def test_an_unfinished_run_of_ours_is_flagged_and_a_broken_file_skipped(tmp_path, capsys):
    folder = tmp_path / "ERM" / "Synthetic" / "group_labels_yes"
    header = {"hparams": {"lr": 0.001}, "done_path": str(folder / "done_hpcomb_0_seed0")}  # ours name their done file
    _write(folder, 0, 0, header, [{"step": 0, "va_wga": 0.4}])
    _write(folder, 1, 0, {**header, "done_path": str(folder / "done_hpcomb_1_seed0")}, [{"step": 0, "va_wga": 0.5}])
    (folder / "done_hpcomb_1_seed0").write_text("")
    (folder / "results_hpcomb_2_seed0.json").write_text('{"hparams": {}}\nnot json\n{"step": 0}\n')
    frame = load_records(tmp_path)
    assert frame.set_index("hpcomb").finished.to_dict() == {0: False, 1: True}
    assert "results_hpcomb_2_seed0.json" in capsys.readouterr().err
    assert not any(math.isnan(value) for value in frame.va_wga)
