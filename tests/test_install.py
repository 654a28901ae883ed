"""`pip install .` gives a toolkit that trains: the wheel built from this checkout, installed into a
throw-away virtualenv, runs its console scripts from another folder with the repository out of reach.

Offline: the wheel is built with this interpreter's setuptools (--no-build-isolation) and installed
without its dependencies, which the virtualenv reads from this interpreter's site-packages (a .pth
file: a virtualenv made from another one would only see the base interpreter's packages).
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import XRM

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "XRM", "mat")  # what the build reads
SHORT_RUN = '{"num_steps": 41, "eval_every": 20}'
CONSOLE_SCRIPTS = ("xrm-train", "xrm-results", "xrm-reproduce", "xrm-download", "mat-figure1", "mat-figure3",
                   "mat-memorization")


def _run(command: list[str], **options) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **options)
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout's sources (the build writes beside its sources)."""
    source = tmp_path / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-q", "-w", str(tmp_path / "wheels"), str(source)])
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    return wheel


def _virtualenv_with(wheel: Path, folder: Path) -> Path:
    """A virtualenv in ``folder`` with ``wheel`` installed; its bin folder."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(folder)])
    python = folder / "bin" / "python"
    inner = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(inner) / "outer_packages.pth").write_text("".join(f"{path}\n" for path in outer))
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
          "--disable-pip-version-check", "-q", str(wheel)])
    return folder / "bin"


def _installed(tmp_path: Path) -> tuple[Path, dict]:
    """(a working folder outside the repository, the environment that runs the installed commands)."""
    bin_folder = _virtualenv_with(_build_wheel(tmp_path), tmp_path / "venv")
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    environment.update(PATH=f"{bin_folder}{os.pathsep}{environment['PATH']}", OMP_NUM_THREADS="1",
                       PYTHONNOUSERSITE="1")
    work = tmp_path / "work"
    work.mkdir()
    return work, environment


def _start(installed: tuple[Path, dict], *command: str) -> subprocess.Popen:
    work, environment = installed
    return subprocess.Popen(command, cwd=work, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _call(installed: tuple[Path, dict], *command: str) -> subprocess.CompletedProcess:
    process = _start(installed, *command)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_the_installed_package_trains_and_answers_from_another_folder(tmp_path):
    installed = _installed(tmp_path)
    where = _call(installed, "python", "-c", "import json, XRM, mat; print(json.dumps([XRM.__file__, mat.__file__]))")
    assert where.returncode == 0, where.stderr
    assert all(not Path(path).is_relative_to(ROOT) for path in json.loads(where.stdout)), where.stdout
    versions = _start_version_checks(installed)  # while the sweeps train
    _check_phase_1_phase_2_and_results(installed)
    _check_protocol_and_download(installed)
    _check_hints_name_the_installed_commands(installed)
    _check_versions(versions)


def _check_phase_1_phase_2_and_results(installed: tuple[Path, dict]) -> None:
    work = installed[0]
    phase_1 = _call(installed, "xrm-train", "--phase", "1", "--datasets", "Synthetic", "--hparams", SHORT_RUN,
                    "--out_dir", "out")
    assert phase_1.returncode == 0, phase_1.stderr
    phase_1_folder = work / "out" / "XRM" / "Synthetic" / "group_labels_no"
    assert (phase_1_folder / "done_hpcomb_0_seed0").is_file()
    assert (phase_1_folder / "inferred_hpcomb_0_seed0.pt").is_file()
    # MAT is known: the installed mat is a plugin of the training command
    phase_2 = _call(installed, "xrm-train", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "MAT",
                    "--group_labels", "no", "--hparams", SHORT_RUN, "--out_dir", "out")
    assert phase_2.returncode == 0, phase_2.stderr
    assert (work / "out" / "MAT" / "Synthetic" / "group_labels_no" / "done_hpcomb_0_seed0").is_file()
    results = _call(installed, "xrm-results", "--dir", "out")
    assert results.returncode == 0, results.stderr
    assert [line for line in results.stdout.splitlines() if line.startswith("==")] == [
        "== MAT / Synthetic / group_labels_no  (phase 2, selected by va_wga)",
        "== XRM / Synthetic / group_labels_no  (phase 1, selected by flip_rate)"]
    table = _call(installed, "python", "-m", "XRM.cli", "results", "--out_dir", "out", "--table", "csv")
    assert table.returncode == 0 and table.stdout.startswith("dataset,algorithm,selection"), table.stderr
    # the paper's memorisation study reads the same phase-1 folder (mat's command; PNG through matplotlib)
    study = _call(installed, "mat-memorization", "--datasets", "Synthetic", "--phase_1_dir", "out/XRM",
                  "--num_models", "2", "--hparams", '{"num_steps": 5}', "--device", "cpu", "--out_dir", "memo")
    assert study.returncode == 0, study.stderr
    assert sorted(path.name for path in (work / "memo").iterdir()) == ["memorization.json", "memorization.png",
                                                                       "scores.pt"]


def _check_protocol_and_download(installed: tuple[Path, dict]) -> None:
    dry_run = _call(installed, "xrm-reproduce", "--datasets", "Synthetic", "--num_hparams_combs", "2",
                    "--num_seeds", "2", "--out_dir", "table1", "--dry_run")
    assert dry_run.returncode == 0, dry_run.stderr
    assert dry_run.stdout.splitlines()[0] == "stage 1/4 phase 1 (XRM): 2 runs, 0 done, 2 to run"
    offline = _call(installed, "xrm-download", "--data_path", "data", "waterbirds")
    assert offline.returncode == 2
    assert offline.stderr.splitlines()[-1].startswith("error: waterbirds: missing data/waterbirds/")


def _check_hints_name_the_installed_commands(installed: tuple[Path, dict]) -> None:
    """An error that tells what to run next names the console scripts (XRM.common.commands)."""
    missing = _call(installed, "xrm-train", "--phase", "1", "--datasets", "Waterbirds", "--data_path", "data")
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("; run: xrm-download --features --download --data_path data waterbirds")
    nowhere = _call(installed, "xrm-results", "--dir", "nowhere")
    assert nowhere.returncode == 2
    assert nowhere.stderr.strip() == "error: no results folder nowhere; pass the --out_dir you gave xrm-train"


def _start_version_checks(installed: tuple[Path, dict]) -> list[tuple[list[str], subprocess.Popen]]:
    commands = [[name, "--version"] for name in CONSOLE_SCRIPTS]
    commands += [["python", "-m", package, "--version"] for package in ("XRM.cli", "mat")]
    return [(command, _start(installed, *command)) for command in commands]


def _check_versions(started: list[tuple[list[str], subprocess.Popen]]) -> None:
    for command, process in started:
        out, err = process.communicate(timeout=300)
        assert (process.returncode, out) == (0, f"{' '.join(command[:-1])} {XRM.__version__}\n"), err
