"""EIIL (phase 1): the environment inference on hand-built logits, and an EIIL folder through main.py."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from spurious_features import write_spurious_features

from XRM.algorithms.eiil import EIIL, infer_environments, irm_penalty, scale_gradients
from XRM.results.records import EIIL_PENALTY, read_results
from XRM.runs.sweep import SweepSpec, make_runs, plan_stacks
from XRM.runs.train import train_stack

FOLDER = Path("EIIL/spurious/group_labels_no")


def test_scale_gradients_are_the_derivative_of_the_scaled_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5], [-3.0, 0.2]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    scale = torch.ones((), dtype=torch.float64, requires_grad=True)
    expected = [torch.autograd.grad(F.cross_entropy(scale * row[None], label[None]), scale)[0].item()
                for row, label in zip(logits, y)]
    assert scale_gradients(logits, y).tolist() == pytest.approx(expected)


def test_the_penalty_is_maximised_by_splitting_the_majority_from_the_minority():
    """90 examples the model gets right with confidence (the majority: its loss falls as the logits
    grow), 10 it gets wrong (the minority: its loss grows): the split puts them apart."""
    majority = torch.tensor([[4.0, -4.0]]).expand(90, 2)
    minority = torch.tensor([[2.0, -2.0]]).expand(10, 2)
    logits, y = torch.cat([majority, minority]), torch.zeros(100, dtype=torch.long)
    y[90:] = 1  # the minority's labels disagree with the model
    gradients = scale_gradients(logits, y)
    assignment = infer_environments(gradients, steps=2000, lr=0.05, seed=0) > 0.5
    assert bool(assignment[:90].all() != assignment[90:].any()) and len(set(assignment[:90].tolist())) == 1
    assert len(set(assignment[90:].tolist())) == 1
    split = irm_penalty(gradients, assignment.double())
    assert split > irm_penalty(gradients, torch.ones(100, dtype=torch.float64))
    assert split > irm_penalty(gradients, (torch.arange(100) % 2).double())


def test_infer_groups_labels_both_splits_and_records_the_penalty():
    eiil = EIIL(2)
    logits = torch.tensor([[3.0, -3.0]] * 8 + [[-3.0, 3.0]] * 8 + [[1.0, -1.0]] * 2 + [[-1.0, 1.0]] * 2)
    y = torch.tensor([0] * 8 + [1] * 8 + [1] * 2 + [0] * 2)
    state = {"seed": torch.tensor([0]), "eiil_steps": torch.tensor([1500]), "eiil_lr": torch.tensor([0.05])}
    [groups] = eiil.infer_groups(logits[None], state, y, logits[None], y)
    assert groups.held_out_logits is None and not groups.degenerate
    wrong = groups.train_attributes[16:]
    assert len(set(wrong.tolist())) == 1 and not bool((groups.train_attributes[:16] == wrong[0]).any())
    assert groups.metrics[EIIL_PENALTY] > 0 and groups.validation_attributes.shape == (20,)


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """A small spurious features file: 400 training examples, 10% minority."""
    return write_spurious_features(tmp_path_factory.mktemp("data") / "spurious.pt", noise_dim=8)


def _phase_1(features: Path, out: Path, stack_size: int | None) -> None:
    """Two EIIL runs in float64, in this process, as main.py trains them."""
    spec = SweepSpec(phase=1, datasets=[str(features)], algorithms=["EIIL"], group_labels="no", data_path=str(out),
                     out_dir=str(out), num_hparams_combs=2, device="cpu", dtype="float64",
                     hparams_overrides={"num_steps": 61, "eval_every": 30, "eiil_steps": 300})
    for stack in plan_stacks(make_runs(spec), stack_size):
        train_stack(stack)


def test_a_stacked_reference_model_infers_what_it_infers_alone_in_float64(features, tmp_path):
    for mode, size in (("stacked", None), ("alone", 1)):
        _phase_1(features, tmp_path / mode, size)
    for comb in range(2):
        name = FOLDER / f"inferred_hpcomb_{comb}_seed0.pt"
        stacked, alone = (torch.load(tmp_path / mode / name) for mode in ("stacked", "alone"))
        assert torch.equal(stacked["tr"], alone["tr"]) and torch.equal(stacked["va"], alone["va"])
        assert stacked["tr_ho"] is None and alone["tr_ho"] is None
        results = FOLDER / f"results_hpcomb_{comb}_seed0.json"
        stacked_records, alone_records = (read_results(tmp_path / mode / results)[1] for mode in ("stacked", "alone"))
        assert stacked_records[-1] == pytest.approx(alone_records[-1])
        assert set(stacked_records[-1]) == {"step", EIIL_PENALTY}


def test_eiil_folder_through_main(features, tmp_path, script):
    """Phase 1 with EIIL, then GroupDRO on its folder records va_gi_wga; MAT on it says one line."""
    common = ["main.py", "--datasets", str(features), "--out_dir", str(tmp_path), "--data_path", str(tmp_path),
              "--device", "cpu"]
    phase_1 = script(*common, "--phase", "1", "--algorithms", "EIIL", "--num_hparams_combs", "2",
                     "--hparams", '{"num_steps": 61, "eval_every": 30, "eiil_steps": 300}')
    assert phase_1.returncode == 0, phase_1.stderr
    inferred = sorted((tmp_path / FOLDER).glob("inferred_hpcomb_*_seed0.pt"))
    assert inferred, phase_1.stderr
    phase_2 = ["--phase", "2", "--hparams", '{"num_steps": 41, "eval_every": 20}']
    group_dro = script(*common, *phase_2, "--algorithms", "GroupDRO", "--group_labels", str(tmp_path / "EIIL"))
    assert group_dro.returncode == 0, group_dro.stderr
    [results] = (tmp_path / "GroupDRO" / "spurious" / "group_labels_inferred").glob("results_*.json")
    assert all("va_gi_wga" in record for record in read_results(results)[1])
    mat = script(*common, *phase_2, "--algorithms", "MAT", "--phase_1_dir", str(tmp_path / "EIIL"))
    assert mat.returncode == 2
    [line] = mat.stderr.strip().splitlines()
    assert line.startswith("error: ") and "has no held-out logits" in line and "EIIL" in line


@pytest.mark.parametrize("hparams, message", [('{"eiil_steps": 0}', "eiil_steps = 0: it must be an integer >= 1"),
                                              ('{"eiil_lr": -1}', "eiil_lr = -1: it must be a finite number > 0")])
def test_bad_eiil_hparams_get_one_line(features, tmp_path, script, hparams, message):
    result = script("main.py", "--phase", "1", "--algorithms", "EIIL", "--datasets", str(features), "--out_dir",
                    str(tmp_path), "--data_path", str(tmp_path), "--device", "cpu", "--hparams", hparams)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
