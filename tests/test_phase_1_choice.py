"""Which phase-1 run serves each phase-2 seed: seed 0's best for every seed (the reference's rule), or paired."""
import json

import torch

import mat  # noqa: F401  (registers MAT, as a user's import does)
from XRM.runs.sweep import SweepSpec, make_runs


def _phase_1_run(directory, comb: int, seed: int, flip_rate: float) -> None:
    lines = [{"hparams": {}}, {"step": 0, "flip_rate": 0.0}, {"step": 100, "flip_rate": flip_rate}]
    (directory / f"results_hpcomb_{comb}_seed{seed}.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    torch.save({"tr": torch.zeros(1000, dtype=torch.long), "va": torch.zeros(1000, dtype=torch.long),
                "tr_ho": torch.zeros(1000, 2)}, directory / f"inferred_hpcomb_{comb}_seed{seed}.pt")


def _spec(out, algorithm: str, group_labels: str, pair: bool) -> SweepSpec:
    return SweepSpec(phase=2, datasets=["Synthetic"], algorithms=[algorithm], group_labels=group_labels,
                     data_path=str(out), out_dir=str(out), num_seeds=2, pair_phase_1_seeds=pair)


def test_phase_1_seed_0_serves_every_seed_unless_paired(tmp_path):
    directory = tmp_path / "XRM" / "Synthetic" / "group_labels_no"
    directory.mkdir(parents=True)
    _phase_1_run(directory, 0, 0, 0.10)
    _phase_1_run(directory, 1, 0, 0.20)  # seed 0's best
    _phase_1_run(directory, 0, 1, 0.30)  # seed 1's best
    _phase_1_run(directory, 1, 1, 0.05)
    reference = make_runs(_spec(tmp_path, "MAT", "no", pair=False))
    assert [run.phase_1_file for run in reference] == [str(directory / "inferred_hpcomb_1_seed0.pt")] * 2
    paired = make_runs(_spec(tmp_path, "MAT", "no", pair=True))
    assert [run.phase_1_file for run in paired] == [str(directory / "inferred_hpcomb_1_seed0.pt"),
                                                    str(directory / "inferred_hpcomb_0_seed1.pt")]
    assert paired[1].header()["pair_phase_1_seeds"] is True and reference[1].header()["pair_phase_1_seeds"] is False
    groups = make_runs(_spec(tmp_path, "GroupDRO", str(tmp_path / "XRM"), pair=False))
    assert [run.group_labels for run in groups] == [str(directory / "inferred_hpcomb_1_seed0.pt")] * 2


def test_a_phase_1_file_without_held_out_logits(script, tmp_path):
    """The XRM repository's own main.py saves tr_ho = None: MAT says so in one line; GroupDRO uses its groups."""
    directory = tmp_path / "XRM" / "Synthetic" / "group_labels_no"
    directory.mkdir(parents=True)
    _phase_1_run(directory, 0, 0, 0.1)
    inferred = directory / "inferred_hpcomb_0_seed0.pt"
    attributes = (torch.arange(1000) % 7 == 0).long()
    torch.save({"tr": attributes, "va": attributes, "tr_ho": None}, inferred)
    common = ["main.py", "--phase", "2", "--datasets", "Synthetic", "--out_dir", str(tmp_path),
              "--hparams", '{"num_steps": 21, "eval_every": 10}']
    mat = script(*common, "--algorithms", "MAT", "--group_labels", "no")
    assert mat.returncode == 2
    assert mat.stderr.strip().splitlines() == [
        f"error: {inferred} has no held-out logits ('tr_ho' is absent or None, as in files of the XRM repository's "
        "main.py and of EIIL, which trains no held-out model); MAT needs them: re-run phase 1 with XRM in this "
        "toolkit (GroupDRO and the other baselines can still use the file's groups)"]
    group_dro = script(*common, "--algorithms", "GroupDRO", "--group_labels", str(inferred))
    assert group_dro.returncode == 0, group_dro.stderr
    assert (tmp_path / "GroupDRO" / "Synthetic" / "group_labels_inferred" / "done_hpcomb_0_seed0").exists()
