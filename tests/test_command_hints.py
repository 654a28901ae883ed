"""Messages that tell what to run next name the command in the spelling the user ran: a checkout's
script, a console script, or ``python -m XRM.cli <command>`` (XRM/common/commands.py)."""
import tomllib

import pytest
from conftest import ROOT

from XRM.common.commands import COMMANDS, command


def _error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("invocation, download", [
    (["main.py"], "python download.py"),
    (["-m", "XRM.cli", "train"], "python -m XRM.cli download"),
])
def test_a_missing_dataset_names_the_download_command_as_training_was_run(script, tmp_path, invocation, download):
    result = script(*invocation, "--phase", "1", "--datasets", "Waterbirds", "--data_path", str(tmp_path / "data"),
                    "--out_dir", str(tmp_path / "out"))
    assert _error_line(result).endswith(f"; run: {download} --features --download --data_path {tmp_path / 'data'} "
                                        "waterbirds")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("invocation, train", [
    (["main.py"], "python main.py"),
    (["-m", "XRM.cli", "train"], "python -m XRM.cli train"),
])
def test_a_group_label_folder_without_phase_1_names_the_training_command_as_it_was_run(script, tmp_path, invocation,
                                                                                       train):
    (tmp_path / "phase1").mkdir()
    result = script(*invocation, "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO",
                    "--group_labels", str(tmp_path / "phase1"), "--out_dir", str(tmp_path / "out"))
    assert _error_line(result).endswith(f"run phase 1 first: {train} --phase 1 --datasets Synthetic "
                                        f"--num_hparams_combs 10 --out_dir {tmp_path}")


@pytest.mark.parametrize("invocation, train", [
    (["XRM/read_results.py"], "python main.py"),
    (["-m", "XRM.cli", "results"], "python -m XRM.cli train"),
])
def test_read_results_on_a_missing_folder_names_the_training_command_as_it_was_run(script, tmp_path, invocation,
                                                                                   train):
    result = script(*invocation, "--dir", str(tmp_path / "nope"))
    assert _error_line(result) == f"error: no results folder {tmp_path / 'nope'}; pass the --out_dir you gave {train}"


def test_every_spelling_of_every_command():
    root = ROOT / "main.py"
    assert command("download", str(root)) == f"python {ROOT / 'download.py'}"
    assert command("results", str(root)) == f"python {ROOT / 'XRM' / 'read_results.py'}"
    assert command("train", str(ROOT / "XRM" / "read_results.py")) == f"python {ROOT / 'main.py'}"
    assert command("reproduce", str(ROOT / "memorization_analysis.py")) == f"python {ROOT / 'reproduce.py'}"
    assert command("download", "/somewhere/bin/xrm-train") == "xrm-download"
    assert command("train", "/somewhere/bin/mat-memorization") == "xrm-train"
    assert command("results", "python -m XRM.cli train") == "python -m XRM.cli results"
    # a script that is no checkout's (a user's own main.py), a notebook: the spelling that works wherever XRM imports
    assert command("download", "/tmp/elsewhere/main.py") == "python -m XRM.cli download"
    assert command("train", "/opt/python/site-packages/ipykernel_launcher.py") == "python -m XRM.cli train"


def test_the_commands_are_those_installed_and_those_of_python_m():
    from XRM.cli.__main__ import COMMANDS as MODULE_COMMANDS

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert COMMANDS.keys() == MODULE_COMMANDS.keys()
    for name, known in COMMANDS.items():
        assert scripts[known.console_script] == f"{MODULE_COMMANDS[name]}:run"
        assert (ROOT / known.script).is_file()
