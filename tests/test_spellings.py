"""One thing, one name, several spellings: every command takes a dataset's name in any case and in
download.py's and main.py's spellings (results filed under the registered name), --out_dir wherever
--dir is, --datasets beside memorization_analysis.py's --dataset, and --selection_criterion and
--best_hparams_comb_selection_metric in main.py and read_results alike."""
import json

import backbone_fixtures as fx
import download_fixtures as dfx
import pytest

from mat.cli import memorization_command
from XRM.cli import results_command, train_command
from XRM.cli.entry_point import call_main
from XRM.common.errors import UserError
from XRM.common.registry import Registry
from XRM.data.catalog import dataset_key, dataset_label, get_dataset
from XRM.data.prepare import get_recipe
from XRM.data.synthetic import SyntheticSpurious

SHORT = json.dumps({"num_steps": 41, "eval_every": 20})


def test_a_registry_of_any_case_takes_every_case_and_the_aliases_and_refuses_names_differing_in_case():
    names = Registry("dataset", any_case=True)
    names.add("ColorMNIST", object(), aliases=("cmnist",))
    assert [names.canonical(spelling) for spelling in ("ColorMNIST", "colormnist", "CMNIST", "mnist")] == [
        "ColorMNIST", "ColorMNIST", "ColorMNIST", None]
    with pytest.raises(ValueError, match="dataset 'colorMNIST' is registered twice \\(as 'ColorMNIST'\\)"):
        names.add("colorMNIST", object())
    exact = Registry("algorithm")  # algorithms keep their one spelling
    exact.add("ERM", object())
    assert exact.canonical("erm") is None
    with pytest.raises(UserError, match="unknown algorithm 'erm'; choose from: ERM"):
        exact.lookup("erm")


def test_dataset_names_in_any_case_and_download_py_names_are_the_registered_datasets():
    assert [dataset_key(name) for name in ("synthetic", "WATERBIRDS", "celeba", "cmnist", "ImageNetBG", "nico++",
                                           "NICOPP", "chexpert")] == [
        "Synthetic", "Waterbirds", "CelebA", "ColorMNIST", "ImagenetBG", "NICOpp", "NICOpp", "CheXpert"]
    assert dataset_label("multinli") == "MultiNLI" and isinstance(get_dataset("SYNTHETIC"), SyntheticSpurious)


def test_a_custom_file_named_like_a_builtin_dataset_in_another_case_is_refused(tmp_path):
    fx.write_features(tmp_path / "synthetic.pt")
    with pytest.raises(UserError, match="named like the built-in dataset Synthetic: their results would share"):
        get_dataset(str(tmp_path / "synthetic.pt"))


def test_download_py_takes_main_py_names(tmp_path, capsys):
    assert [get_recipe(name).name for name in ("Waterbirds", "CelebA", "MultiNLI", "ColorMNIST", "ImagenetBG", "NICOpp",
                                               "NICO++", "CheXpert")] == [
        "waterbirds", "celeba", "multinli", "cmnist", "imagenetbg", "nicopp", "nicopp", "chexpert"]
    code, stderr = dfx.run_main(["--data_path", str(tmp_path), "Waterbirds", "ColorMNIST"], capsys)
    assert code == 2  # offline, nothing placed: each dataset's missing files, under download.py's names
    errors = dfx.error_lines(stderr)
    assert errors[0].startswith(f"error: waterbirds: missing {tmp_path / 'waterbirds'}")
    assert len(errors) == 5 and all(line.startswith("error: cmnist: missing ") for line in errors[1:])


def _train(out, *options: str) -> int:
    return fx.run_main(fx.main_args("--out_dir", str(out), "--hparams", SHORT, *options))


def test_main_py_takes_any_case_and_files_results_under_the_registered_name(tmp_path, capsys):
    assert _train(tmp_path, "--phase", "1", "--datasets", "synthetic") == 0
    assert [path.name for path in (tmp_path / "XRM").iterdir()] == ["Synthetic"]
    capsys.readouterr()
    # the same run, however spelled: skipped as done (its identity names the dataset as registered)
    assert _train(tmp_path, "--phase", "1", "--datasets", "SYNTHETIC") == 0
    assert "launched 0 runs, 1 skipped (done)" in capsys.readouterr().out
    assert json.loads((tmp_path / "XRM" / "Synthetic" / "group_labels_no" / "results_hpcomb_0_seed0.json")
                      .read_text().splitlines()[0])["dataset"] == "Synthetic"


def test_main_py_takes_read_results_selection_criterion():
    parser = train_command.get_args_parser()
    for flag in ("--best_hparams_comb_selection_metric", "--selection_criterion"):
        args = parser.parse_args(["--phase", "2", flag, "va_gi_wga"])
        assert args.best_hparams_comb_selection_metric == "va_gi_wga"


def _read_results(capsys, *options: str) -> str:
    assert call_main(results_command.main, results_command.get_args_parser().parse_args(options)) == 0
    return capsys.readouterr().out


def test_read_results_takes_out_dir_main_py_criterion_and_any_case(tmp_path, capsys):
    assert _train(tmp_path, "--phase", "2", "--datasets", "Synthetic", "--algorithms", "ERM", "--group_labels", "yes",
                  "--num_hparams_combs", "2") == 0
    capsys.readouterr()
    seed_readme = _read_results(capsys, "--dir", str(tmp_path), "--datasets", "Synthetic", "--selection_criterion",
                                "va_avg_acc")
    assert "== ERM / Synthetic / group_labels_yes  (phase 2, selected by va_avg_acc)" in seed_readme
    assert _read_results(capsys, "--out_dir", str(tmp_path), "--datasets", "synthetic",
                         "--best_hparams_comb_selection_metric", "va_avg_acc") == seed_readme


def test_memorization_analysis_takes_main_py_datasets():
    parser = memorization_command.get_args_parser()
    assert parser.parse_args(["--datasets", "Synthetic"]).dataset == "Synthetic"
    assert parser.parse_args(["--dataset", "Synthetic"]).dataset == "Synthetic"  # the seed README's spelling
