"""A run's identity (XRM/runs/identity.py): its files name the run, and skipping as done, resuming and
selecting refuse files written by another run with one line, leaving them untouched."""
import json
import shutil

import pytest
import torch

import XRM
from spurious_features import write_spurious_features
from XRM.results.collect import collect_runs, format_table
from XRM.runs.identity import fingerprint_tensors, identity_differences

SHORT = '{"num_steps": 41, "eval_every": 20}'


def _header(path):
    return json.loads(path.read_text().splitlines()[0])


def _assert_one_line(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _snapshot(folder):
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def phase_1(tmp_path_factory):
    """Phase 1 on Synthetic, seeds 0 and 1, two combinations; a second phase-1 folder of other
    hyper-parameters (other held-out logits)."""
    from conftest import run_script

    root = tmp_path_factory.mktemp("identity")
    for folder, steps in (("out", 41), ("other", 61)):
        result = run_script("main.py", "--phase", "1", "--datasets", "Synthetic", "--num_seeds", "2", "--out_dir",
                            str(root / folder), "--hparams", json.dumps({"num_steps": steps, "eval_every": 20}))
        assert result.returncode == 0, result.stderr
    return root


def test_the_header_and_the_checkpoint_name_the_run(phase_1):
    directory = phase_1 / "out" / "XRM" / "Synthetic" / "group_labels_no"
    identity = _header(directory / "results_hpcomb_0_seed1.json")["identity"]
    assert {key: identity[key] for key in ("algorithm", "dataset", "group_labels", "dtype", "hparams_comb", "seed",
                                           "phase_1_file", "version")} == {
        "algorithm": "XRM", "dataset": "Synthetic", "group_labels": "no", "dtype": "float32", "hparams_comb": 0,
        "seed": 1, "phase_1_file": None, "version": XRM.__version__}
    assert identity["hparams"]["num_steps"] == 41 and len(identity["data"]) == 16
    checkpoint = torch.load(directory / "ckpt_hpcomb_0_seed1.pt", weights_only=True)
    assert checkpoint["identity"] == identity


def test_another_seeds_checkpoint_is_not_resumed(phase_1, tmp_path, script):
    out = tmp_path / "out"
    shutil.copytree(phase_1 / "out", out)
    directory = out / "XRM" / "Synthetic" / "group_labels_no"
    for name in ("results", "ckpt"):  # seed 1's files copied over seed 0's, as if by hand
        suffix = ".json" if name == "results" else ".pt"
        shutil.copy(directory / f"{name}_hpcomb_0_seed1{suffix}", directory / f"{name}_hpcomb_0_seed0{suffix}")
    (directory / "done_hpcomb_0_seed0").unlink()
    before = _snapshot(out)
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(out), "--hparams", SHORT,
                    "--resume")
    _assert_one_line(result, "hpcomb_0_seed0 was started as another run", "seed 1 -> 0", "delete its files")
    assert _snapshot(out) == before  # nothing written, no done file


def test_a_finished_run_with_another_precision_is_not_skipped_as_done(phase_1, tmp_path, script):
    out = tmp_path / "out"
    shutil.copytree(phase_1 / "out", out)
    before = _snapshot(out)
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(out), "--hparams", SHORT,
                    "--dtype", "float64")
    _assert_one_line(result, "finished as another run", "dtype 'float32' -> 'float64'", "another --out_dir")
    assert _snapshot(out) == before


def test_finished_mat_runs_with_another_phase_1_dir_are_not_skipped_as_done(phase_1, tmp_path, script):
    out = tmp_path / "out"
    shutil.copytree(phase_1 / "out", out)
    common = ["main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "MAT", "--group_labels", "no",
              "--out_dir", str(out), "--hparams", SHORT]
    assert script(*common).returncode == 0
    assert script(*common).returncode == 0  # the same phase-1 folder: skipped as done
    before = _snapshot(out / "MAT")
    result = script(*common, "--phase_1_dir", str(phase_1 / "other" / "XRM"))
    _assert_one_line(result, "MAT/Synthetic/group_labels_no/hpcomb_0_seed0 finished as another run", "phase_1_file")
    assert _snapshot(out / "MAT") == before


def test_finished_runs_on_a_changed_data_file_are_not_skipped_as_done(tmp_path, script):
    data = write_spurious_features(tmp_path / "tiny.pt", n_train=120, n_evaluation=60, noise_dim=4)
    common = ["main.py", "--phase", "2", "--datasets", str(data), "--algorithms", "ERM", "--group_labels", "yes",
              "--out_dir", str(tmp_path / "out"), "--hparams", SHORT]
    assert script(*common).returncode == 0
    features = torch.load(data, weights_only=True)
    features["tr"]["y"] = 1 - features["tr"]["y"]  # the same file, relabelled
    torch.save(features, data)
    result = script(*common)
    _assert_one_line(result, "finished as another run", "data '")


def test_a_results_file_copied_from_another_seed_is_never_selected(phase_1, tmp_path):
    directory = tmp_path / "XRM" / "Synthetic" / "group_labels_no"
    shutil.copytree(phase_1 / "out" / "XRM" / "Synthetic" / "group_labels_no", directory)
    shutil.copy(directory / "results_hpcomb_0_seed1.json", directory / "results_hpcomb_1_seed0.json")
    table = format_table(collect_runs(directory), "flip_rate")
    assert "best hpcomb 0 by flip_rate" in table
    assert table.splitlines()[-1] == ("  hpcomb_1_seed0: its header names another run (hparams_comb 0, not 1, "
                                      "seed 1, not 0): copied from elsewhere?")


def test_a_custom_dataset_named_like_a_built_in_one_is_refused(tmp_path, script):
    data = write_spurious_features(tmp_path / "Synthetic.pt", n_train=120, n_evaluation=60, noise_dim=4)
    result = script("main.py", "--phase", "1", "--datasets", str(data), "--out_dir", str(tmp_path / "out"))
    _assert_one_line(result, "is named like the built-in dataset Synthetic", "rename the file")
    assert not (tmp_path / "out").exists()


def test_differences_are_named_one_by_one_and_the_version_is_not_compared():
    recorded = {"seed": 0, "dtype": "float32", "hparams": {"lr": 0.1, "tau": 0.01}, "version": "0.0.9", "data": "ab"}
    wanted = {"seed": 0, "dtype": "float64", "hparams": {"lr": 0.2, "tau": 0.01}, "version": "0.1.0"}
    assert identity_differences(recorded, wanted) == ["dtype 'float32' -> 'float64'", "lr 0.1 -> 0.2"]
    assert fingerprint_tensors([torch.tensor([1, 2])]) != fingerprint_tensors([torch.tensor([2, 1])])
    assert fingerprint_tensors([torch.tensor([1, 2])]) == fingerprint_tensors([torch.tensor([1, 2])])
