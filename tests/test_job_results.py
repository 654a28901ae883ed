"""--status reads job results as data: a planted pickle is reported, never run; a bad index is one line."""
import json
import os
import pickle

import pytest
import submitit
from submitit.core.utils import cloudpickle_dump

from XRM.launch import status

RUN = "XRM/Synthetic/group_labels_no/hpcomb_0_seed0"
STATUS = ["main.py", "--phase", "1", "--datasets", "Synthetic", "--status"]


class _Planted:
    """Unpickled by pickle.load, it runs a shell command that makes ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _job_result(tmp_path, job_id: str = "4000001"):
    """The result file submitit would read for local job ``job_id`` in ``tmp_path/jobs``."""
    folder = tmp_path / "jobs"
    folder.mkdir(exist_ok=True)
    return folder, submitit.LocalJob(folder, job_id).paths.result_pickle


def test_results_submitit_writes_are_read(tmp_path):
    _, path = _job_result(tmp_path)
    cloudpickle_dump(("error", "Traceback (most recent call last):\n  ...\nValueError: bad lr\n"), path)
    assert status.read_job_result(path) == ("error", "Traceback (most recent call last):\n  ...\nValueError: bad lr\n")
    cloudpickle_dump(("success", None), path)
    assert status.read_job_result(path) == ("success", None)


@pytest.mark.parametrize("content, why", [
    (("success", None, "extra"), "not a submitit result"),
    (("error", 42), "an error without its traceback"),
    ({"outcome": "success"}, "not a submitit result"),
])
def test_plain_data_of_the_wrong_shape_is_unreadable(tmp_path, content, why):
    _, path = _job_result(tmp_path)
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(status.UnreadableResult, match=why):
        status.read_job_result(path)


def test_a_planted_pickle_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(("error", _Planted(marker)))
    pickle.loads(payload)  # what plain unpickling does: the command runs
    assert marker.exists()
    marker.unlink()
    _, path = _job_result(tmp_path)
    path.write_bytes(payload)
    with pytest.raises(status.UnreadableResult, match=r"it asks to load posix\.system"):
        status.read_job_result(path)
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(status.UnreadableResult, match="not a pickle"):
        status.read_job_result(path)
    assert not marker.exists()


def test_status_reports_a_planted_result_as_failed_and_runs_nothing(script, tmp_path):
    marker = tmp_path / "ran"
    folder, path = _job_result(tmp_path)
    path.write_bytes(pickle.dumps(("error", _Planted(marker))))
    slurm_dir = tmp_path / "submitit"
    slurm_dir.mkdir()
    (slurm_dir / "runs_index.json").write_text(json.dumps(
        {RUN: {"executor": "local", "job_id": "4000001", "folder": str(folder)}}))
    result = script(*STATUS, "--out_dir", str(tmp_path / "out"), "--slurm_dir", str(slurm_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"failed  {RUN}  (stack 0)  unreadable job result {path} (it asks to load posix.system); it was not loaded",
        "0 done, 0 running, 0 pending, 1 failed, 0 stopped, 0 not launched (1 runs; unfinished ones in 1 stacks)"]
    assert not marker.exists()


@pytest.mark.parametrize("index", [
    "[1, 2]",
    json.dumps({RUN: {"executor": "local", "job_id": 7, "folder": "jobs"}}),
    json.dumps({RUN: {"executor": "ssh", "job_id": "7", "folder": "jobs"}}),
    json.dumps({RUN: {"executor": "local", "job_id": "7"}}),
])
def test_an_index_that_is_not_one_is_a_one_line_error(script, tmp_path, index):
    slurm_dir = tmp_path / "submitit"
    slurm_dir.mkdir()
    (slurm_dir / "runs_index.json").write_text(index)
    result = script(*STATUS, "--out_dir", str(tmp_path / "out"), "--slurm_dir", str(slurm_dir))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {slurm_dir / 'runs_index.json'} is not a run -> job index (each entry: executor, job_id, folder); "
        "delete it to forget old jobs"]
