"""Runs download.py with every file's checksum replaced by that of the test's fixture.

The fixtures are tiny stand-ins, so the real MD5s (CelebA, MNIST) and git ids cannot
match them; everything else is download.py as users run it. XRM_TEST_SHA256 holds a
JSON map {file name: sha256}; files absent from it are checked against nothing.
"""
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from XRM.cli import download_command  # noqa: E402
from XRM.data import prepare  # noqa: E402

if __name__ == "__main__":
    fixture_sha256 = json.loads(os.environ.get("XRM_TEST_SHA256", "{}"))
    for name, recipe in list(prepare.RECIPES.items()):
        files = tuple(dataclasses.replace(remote, md5=None, git_sha1=None, sha256_unconfirmed=None,
                                          sha256=fixture_sha256.get(remote.name)) for remote in recipe.files)
        prepare.RECIPES[name] = dataclasses.replace(recipe, files=files)
    download_command.run()
