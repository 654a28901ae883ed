"""Planted symbolic links are never followed: lock files, temporaries, atomic writes, appended records."""
import tempfile

import pytest
import torch

from XRM.common.errors import UserError
from XRM.common.fileio import append_jsonl, atomic_torch_save, atomic_write_text
from XRM.runs.lock import held_elsewhere, try_lock, unlock

SHORT = ["--hparams", '{"num_steps": 21, "eval_every": 10}']


def _planted(tmp_path, name: str):
    """A run folder holding a link ``name`` to a file (not there yet) outside it; the folder and the target."""
    folder = tmp_path / "run"
    folder.mkdir()
    target = tmp_path / "outside" / "victim"
    target.parent.mkdir()
    (folder / name).symlink_to(target)
    return folder, target


def test_a_linked_lock_file_is_refused_and_nothing_is_made_where_it_points(tmp_path):
    folder, target = _planted(tmp_path, ".lock_hpcomb_0_seed0")
    lock = folder / ".lock_hpcomb_0_seed0"
    for attempt in (try_lock, held_elsewhere):
        with pytest.raises(UserError) as refusal:
            attempt(lock)
        assert str(refusal.value) == (f"{lock} is a symbolic link, which is never followed: delete it "
                                      f"(rm {lock}) and run the command again")
        assert not target.exists()
    lock.unlink()
    handle = try_lock(lock)  # once the link is gone, the lock is a plain file again
    assert handle is not None and lock.is_file() and not lock.is_symlink()
    unlock(handle)


def test_main_refuses_a_linked_lock_in_one_line_and_trains_nothing(script, tmp_path):
    folder = tmp_path / "out" / "XRM" / "Synthetic" / "group_labels_no"
    folder.mkdir(parents=True)
    target = tmp_path / "victim"
    (folder / ".lock_hpcomb_0_seed0").symlink_to(target)
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(tmp_path / "out"), *SHORT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {folder / '.lock_hpcomb_0_seed0'} is a symbolic link, which is never followed: delete it "
        f"(rm {folder / '.lock_hpcomb_0_seed0'}) and run the command again"]
    assert not target.exists()
    assert [path.name for path in folder.iterdir()] == [".lock_hpcomb_0_seed0"]


def test_an_atomic_write_replaces_a_link_at_its_destination(tmp_path):
    folder, target = _planted(tmp_path, "results_hpcomb_0_seed0.json")
    target.write_text("not ours\n")
    atomic_write_text('{"hparams": {}}\n', folder / "results_hpcomb_0_seed0.json")
    assert not (folder / "results_hpcomb_0_seed0.json").is_symlink()
    assert (folder / "results_hpcomb_0_seed0.json").read_text() == '{"hparams": {}}\n'
    assert target.read_text() == "not ours\n"


def test_temporary_names_taken_by_links_are_passed_over(tmp_path, monkeypatch):
    # The next two temporary names are planted as links; the writes must take fresh names instead.
    folder = tmp_path / "run"
    folder.mkdir()
    targets = [tmp_path / "victim_a", tmp_path / "victim_b"]
    (folder / ".ckpt_hpcomb_0_seed0.pt.planted.tmp").symlink_to(targets[0])
    (folder / ".done_hpcomb_0_seed0.planted.tmp").symlink_to(targets[1])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(["planted", "fresh"]))
    atomic_torch_save({"step": 7}, folder / "ckpt_hpcomb_0_seed0.pt")
    atomic_write_text("", folder / "done_hpcomb_0_seed0")
    assert torch.load(folder / "ckpt_hpcomb_0_seed0.pt")["step"] == 7
    assert (folder / "done_hpcomb_0_seed0").read_text() == ""
    assert not any(target.exists() for target in targets)
    assert sorted(path.name for path in folder.iterdir() if not path.is_symlink()) == [
        "ckpt_hpcomb_0_seed0.pt", "done_hpcomb_0_seed0"]


def test_records_are_never_appended_through_a_link(tmp_path):
    folder, target = _planted(tmp_path, "results_hpcomb_0_seed0.json")
    with pytest.raises(UserError, match="is a symbolic link, which is never followed"):
        append_jsonl(folder / "results_hpcomb_0_seed0.json", {"step": 0, "va_wga": 0.5})
    assert not target.exists()
