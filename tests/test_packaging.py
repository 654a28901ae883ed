"""pyproject.toml: `pip install .` ships every package of the library and the requirements' dependencies."""
import re
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


def test_dependencies_are_requirements_txt_without_the_test_runner():
    def name_and_bound(line: str) -> str:
        return line.split("#")[0].strip()

    required = [name_and_bound(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
                if name_and_bound(line) and not line.startswith("#")]
    project = _project()["project"]
    assert sorted(project["dependencies"]) == sorted(r for r in required if not r.startswith("pytest"))
    assert project["optional-dependencies"]["test"] == [r for r in required if r.startswith("pytest")]
    assert re.fullmatch(r">=3\.\d+", project["requires-python"])
