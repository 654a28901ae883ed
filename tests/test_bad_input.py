"""User mistakes: one line on stderr that says what to do, exit status 2, nothing written."""
import sys
from pathlib import Path

import pytest
import torch


def _assert_user_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _nothing_under(path: Path) -> bool:
    return not path.exists() or not any(p.is_file() for p in path.rglob("*"))


def test_unknown_dataset_lists_the_valid_names(script, tmp_path):
    result = script("main.py", "--phase", "2", "--datasets", "Nope", "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, "unknown dataset 'Nope'", "Synthetic", "Waterbirds")
    assert _nothing_under(tmp_path / "out")


def test_unknown_algorithm_lists_the_valid_names(script, tmp_path):
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "Magic",
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, "unknown algorithm 'Magic'", "GroupDRO", "MAT")


def test_missing_features_file_names_the_path_and_the_download_command(script, tmp_path):
    result = script("main.py", "--phase", "1", "--datasets", "Waterbirds", "--data_path", str(tmp_path / "data"),
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, str(tmp_path / "data" / "waterbirds" / "features.pt"),
                       "python download.py --features", "waterbirds")
    assert _nothing_under(tmp_path / "out")


def test_mat_before_phase_1_names_the_expected_files_and_command(script, tmp_path):
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "MAT",
                    "--group_labels", "no", "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, str(tmp_path / "out" / "XRM" / "Synthetic" / "group_labels_no"),
                       "inferred_hpcomb_", f"python main.py --phase 1 --datasets Synthetic --num_hparams_combs 10 --out_dir {tmp_path / 'out'}")
    assert _nothing_under(tmp_path / "out")


def test_mat_before_phase_1_on_a_custom_dataset_names_its_file_in_the_command(script, tmp_path):
    import backbone_fixtures as fx

    fx.write_features(tmp_path / "mine.pt")
    result = script("main.py", "--phase", "2", "--datasets", str(tmp_path / "mine.pt"), "--algorithms", "MAT",
                    "--group_labels", "no", "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, str(tmp_path / "out" / "XRM" / "mine" / "group_labels_no"),
                       f"python main.py --phase 1 --datasets {tmp_path / 'mine.pt'} --num_hparams_combs 10")
    assert _nothing_under(tmp_path / "out")


def test_mat_after_a_phase_1_whose_groups_were_degenerate_says_so(script, tmp_path):
    out = tmp_path / "out"
    assert script("main.py", "--phase", "1", "--datasets", "Synthetic", "--num_hparams_combs", "1", "--out_dir",
                  str(out), "--hparams", '{"num_steps": 3, "eval_every": 2}').returncode == 0
    folder = out / "XRM" / "Synthetic" / "group_labels_no"
    (folder / "inferred_hpcomb_0_seed0.pt").unlink()  # what a run whose groups are degenerate leaves
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "MAT", "--group_labels",
                    "no", "--out_dir", str(out))
    _assert_user_error(result, f"the 1 phase-1 run(s) in {folder} wrote no phase-1 file", "degenerate",
                       "--group_labels yes")
    assert not (out / "MAT").exists()


def test_group_label_folder_without_phase_1_outputs(script, tmp_path):
    (tmp_path / "phase1").mkdir()
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO",
                    "--group_labels", str(tmp_path / "phase1"), "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, "no phase-1 results", "python main.py --phase 1")
    assert _nothing_under(tmp_path / "out")


def test_group_label_file_of_the_wrong_size(script, tmp_path):
    path = tmp_path / "labels.pt"
    torch.save({"tr": torch.zeros(10, dtype=torch.long), "va": torch.zeros(1000, dtype=torch.long)}, path)
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO",
                    "--group_labels", str(path), "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, str(path), "'tr' has shape (10,)", "(1000,)")
    assert _nothing_under(tmp_path / "out")


def test_corrupt_group_label_file(script, tmp_path):
    path = tmp_path / "labels.pt"
    path.write_bytes(b"not a torch file")
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--group_labels", str(path),
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, "cannot read group-label file", str(path))


@pytest.mark.parametrize("labels", ["yes", "some.pt"])
def test_phase_1_refuses_group_labels(script, tmp_path, labels):
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--group_labels", labels,
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, "phase 1 (XRM) infers groups", "--group_labels no")
    assert _nothing_under(tmp_path / "out")


def test_phase_2_algorithm_in_phase_1_and_bad_overrides(script, tmp_path):
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--algorithms", "ERM",
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, "ERM is a phase-2 algorithm")
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--hparams", '{"lrr": 1}',
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, "unknown hyper-parameter(s) lrr")
    assert _nothing_under(tmp_path / "out")


def test_read_results_on_a_missing_folder(script, tmp_path):
    result = script("XRM/read_results.py", "--dir", str(tmp_path / "none"))
    _assert_user_error(result, "no results folder", "--out_dir")


@pytest.mark.parametrize("workers", ["-1", "many"])
def test_a_worker_count_that_is_no_count(script, tmp_path, workers):
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--num_workers", workers,
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, f"--num_workers {workers}", "auto or a number of workers >= 0")
    assert _nothing_under(tmp_path / "out")


def test_a_device_that_does_not_exist(script, tmp_path):
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--device", "tpu",
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, "--device tpu", "auto, cpu, cuda or cuda:N")
    assert _nothing_under(tmp_path / "out")


def test_resume_with_other_hyper_parameters_is_refused(script, tmp_path):
    common = ["main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(tmp_path / "out")]
    assert script(*common, "--hparams", '{"num_steps": 21, "eval_every": 10}').returncode == 0
    directory = tmp_path / "out" / "XRM" / "Synthetic" / "group_labels_no"
    (directory / "done_hpcomb_0_seed0").unlink()  # as if it had been interrupted after its last checkpoint
    before = (directory / "results_hpcomb_0_seed0.json").read_text()
    result = script(*common, "--hparams", '{"num_steps": 41, "eval_every": 10}', "--resume")
    _assert_user_error(result, "hpcomb_0_seed0 was started as another run: its results record num_steps 21 -> 41",
                       "delete its files")
    assert (directory / "results_hpcomb_0_seed0.json").read_text() == before


@pytest.mark.parametrize("override, message", [
    ('{"optimizer": "rmsprop"}', "hyper-parameter optimizer = 'rmsprop': it must be one of sgd, adam, adamw"),
    ('{"batch_size": 0}', "hyper-parameter batch_size = 0: it must be an integer >= 1"),
    ('{"lr": -0.1}', "hyper-parameter lr = -0.1: it must be a finite number > 0"),
    ('{"lr": Infinity}', "hyper-parameter lr = inf: it must be a finite number > 0"),
    ('{"weight_decay": NaN}', "hyper-parameter weight_decay = nan: it must be a finite number >= 0"),
    ('{"batch_size": true}', "hyper-parameter batch_size = True: it must be an integer >= 1"),
    ('{"lr": true}', "hyper-parameter lr = True: it must be a finite number > 0"),
    ('{"num_steps": 1}', "hyper-parameter num_steps = 1: it must be an integer >= 2 (model selection never picks "
                         "step 0, so a run needs an evaluation after it)"),
])
def test_override_values_that_cannot_train(script, tmp_path, override, message):
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--hparams", override,
                    "--out_dir", str(tmp_path / "out"))
    _assert_user_error(result, message)
    assert _nothing_under(tmp_path / "out")


def test_slurm_with_no_cluster_answering_is_one_line_and_leaves_no_job_folder(script, tmp_path):
    from launch_toy import SUBMISSION_FAILED, offline_slurm

    fake_bin = offline_slurm(tmp_path / "bin")
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(tmp_path / "out"),
                    "--slurm_partition", "gpu", "--slurm_dir", str(tmp_path / "jobs"),
                    env={"PATH": f"{fake_bin}:{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert result.stderr.strip().splitlines() == [f"error: {SUBMISSION_FAILED}"]
    assert result.returncode == 2
    assert not (tmp_path / "jobs").exists() and _nothing_under(tmp_path / "out")
