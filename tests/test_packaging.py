"""pyproject.toml: `pip install .` ships every package of the library, the requirements' dependencies and
the commands (tests/test_install.py installs the wheel and runs them)."""
import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from setuptools import find_packages

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_toolkit_and_of_mat_is_installed():
    include = _project()["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = set(find_packages(str(ROOT), include=include))
    on_disk = {str(path.parent.relative_to(ROOT)).replace("/", ".")
               for top in ("XRM", "mat") for path in (ROOT / top).rglob("__init__.py")}
    assert installed == on_disk and {"XRM", "XRM.data", "XRM.algorithms", "mat", "mat.figures"} <= installed
    assert not any(name.startswith("tests") for name in installed)


def test_dependencies_are_requirements_txt_without_the_test_tools_and_the_extras():
    def name_and_bound(line: str) -> str:
        return line.split("#")[0].strip()

    def is_test_tool(requirement: str) -> bool:  # the test runner, and the packaging test's wheel builder
        return requirement.startswith(("pytest", "setuptools"))

    required = [name_and_bound(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
                if name_and_bound(line) and not line.startswith("#")]
    project = _project()["project"]
    extras = project["optional-dependencies"]
    # installed for the tests: they read TensorBoard's files back and decode with TorchCodec (and without it)
    extra = extras["tensorboard"] + extras["torchcodec"]
    assert extra == ["tensorboard>=2.21", "torchcodec>=0.16"] and set(extra) <= set(required)
    assert sorted(project["dependencies"]) == sorted(r for r in required if not is_test_tool(r) and r not in extra)
    assert project["optional-dependencies"]["test"] == [r for r in required if is_test_tool(r)]
    assert re.fullmatch(r">=3\.\d+", project["requires-python"])


def test_every_console_script_is_a_command_with_a_root_script():
    scripts = _project()["project"]["scripts"]
    assert sorted(scripts) == ["mat-figure1", "mat-figure3", "mat-memorization", "xrm-download", "xrm-reproduce",
                               "xrm-results", "xrm-train"]
    for name, target in scripts.items():
        module_name, function = target.split(":")
        assert callable(getattr(importlib.import_module(module_name), function)), name
    # every root script hands its command line to one of them
    wrapped = {path: (ROOT / path).read_text() for path in (
        "main.py", "reproduce.py", "download.py", "XRM/read_results.py", "interpretable_experiment.py",
        "good_bad_ugly_memorization.py", "memorization_analysis.py")}
    commands = {target.split(":")[0] for target in scripts.values()}
    for path, text in wrapped.items():
        assert any(module in text or module.replace(".", "/") in text for module in commands), path


def test_installed_mat_is_a_plugin_of_the_training_commands():
    assert _project()["project"]["entry-points"]["xrm.plugins"] == {"mat": "mat"}


# What the README's commands write at the root of a checkout: results, tables, figures, data, job logs
# (folders with their slash: git tells a folder's pattern from a file's by it).
WRITTEN_BY_COMMANDS = ("out/", "phase_1_results/", "phase_2_results/", "table1/", "table1.md", "table1.tex",
                       "demo_out/", "figures/figure1/", "figures/figure3/", "memorization/", "memo/", "data/",
                       "submitit/", "out/XRM/Synthetic/group_labels_no/results_hpcomb_0_seed0.json")


def test_what_the_commands_write_is_ignored_by_git_and_nothing_tracked_is():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    checked = subprocess.run([git, "check-ignore", "--no-index", *WRITTEN_BY_COMMANDS], cwd=ROOT,
                             capture_output=True, text=True)
    assert sorted(checked.stdout.split()) == sorted(WRITTEN_BY_COMMANDS), checked.stderr
    tracked_but_ignored = subprocess.run([git, "ls-files", "--cached", "--ignored", "--exclude-standard"], cwd=ROOT,
                                         capture_output=True, text=True)
    assert tracked_but_ignored.stdout == "", tracked_but_ignored.stdout
