"""The extraction cases of archive_cases.py under this interpreter: any Python >= 3.10, the
standard library alone (tqdm, when absent, is replaced by a stand-in that shows no bar).

    python3.12 tests/extract_harness.py WORK_DIR

prints {"python": version, "outcomes": {tarfile variant: [outcome of each case] or null}}, an
outcome being the refusal's text or the extracted tree; test_extract.py compares them with
``expected_outcomes()``.
"""
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    import tqdm  # noqa: F401
except ImportError:  # the archive module shows a progress bar; nothing else of tqdm is needed
    sys.modules["tqdm"] = types.SimpleNamespace(tqdm=lambda iterable, **options: iterable)

from archive_cases import KEPT, REFUSED, TARFILES, refusal, tar, tarfile_as, tree  # noqa: E402
from XRM.data.extract import ArchiveError, safe_extract  # noqa: E402


def expected_outcomes() -> list:
    """What every case must give: the refusal's text, or the tree left in the target."""
    return [refusal(name, why) for _, name, why in REFUSED] + [entries for _, entries in KEPT]


def _outcome(members: list, work: Path) -> str | list[str]:
    """Extract ``members`` (as a .tar.gz) into ``work/target``: the refusal's text, or the tree."""
    work.mkdir(parents=True)
    try:
        safe_extract(tar(work / "case.tar.gz", members), work / "target")
    except ArchiveError as error:
        return error.problem
    return tree(work / "target")


def outcomes(work: Path) -> dict[str, list | None]:
    """Each tarfile variant's outcomes of every case (None where this Python cannot be that variant)."""
    found: dict[str, list | None] = {}
    cases = [members for members, _, _ in REFUSED] + [members for members, _ in KEPT]
    for variant_number, variant in enumerate(TARFILES):
        with tarfile_as(variant) as possible:
            found[variant] = [_outcome(members, work / f"{variant_number}_{number}")
                              for number, members in enumerate(cases)] if possible else None
    return found


if __name__ == "__main__":
    print(json.dumps({"python": sys.version.split()[0], "outcomes": outcomes(Path(sys.argv[1]))}))
