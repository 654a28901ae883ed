"""append_jsonl: concurrent writers lose and interleave nothing."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from XRM.common.fileio import append_jsonl

REPO_ROOT = Path(__file__).resolve().parents[1]
# Each writer says it is ready, then waits for "go" so that the two really write at once.
# Lines are longer than a pipe buffer or a Python file buffer: they must stay whole all the same.
WRITER = """
import sys, time
from pathlib import Path
from XRM.common.fileio import append_jsonl
path, writer = Path(sys.argv[1]), sys.argv[2]
(path.parent / f"ready_{writer}").touch()
while not (path.parent / "go").exists():
    time.sleep(0.001)
for i in range(N_LINES):
    append_jsonl(path, {"writer": writer, "i": i, "pad": writer * 10000})
"""
N_LINES = 1000


def test_append_jsonl_adds_one_line_per_record(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    append_jsonl(path, {"b": 1, "a": [1, 2]})
    append_jsonl(path, "two")
    assert path.read_text() == '{"a": [1, 2], "b": 1}\n"two"\n'


def test_two_processes_appending_to_one_file_lose_nothing(tmp_path):
    path = tmp_path / "records.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = WRITER.replace("N_LINES", str(N_LINES))
    writers = [subprocess.Popen([sys.executable, "-c", code, str(path), name], env=env) for name in "ab"]
    while not all((tmp_path / f"ready_{name}").exists() for name in "ab"):
        assert all(writer.poll() is None for writer in writers), "a writer died before writing"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    assert [writer.wait() for writer in writers] == [0, 0]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2 * N_LINES
    for name in "ab":
        assert [record["i"] for record in records if record["writer"] == name] == list(range(N_LINES))
        assert all(record["pad"] == name * 10000 for record in records if record["writer"] == name)
