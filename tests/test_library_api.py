"""The public API (`import mat`; XRM.api for XRM alone): MAT and XRM on a user's own tensors (no files),
and the README's example, run verbatim."""
import json
import re
import warnings
from pathlib import Path

import backbone_fixtures as fx
import memorization_fixtures as data
import pytest
import torch
import torch.nn.functional as F

import mat
from mat.algorithm import MAT
from mat.shift import memorization_aware_shift
from XRM import api
from XRM.algorithms import get_algorithm_class
from XRM.common.errors import UserError
from XRM.networks.classifiers import MLP
from XRM.runs.hparams import default_hparams

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The python block of the README section "MAT in your own training loop"."""
    section = README.read_text().split("## MAT in your own training loop\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_api_is_the_engines_own_code():
    assert mat.memorization_aware_shift is memorization_aware_shift
    assert isinstance(mat.MATLoss(torch.zeros(3, 2), torch.tensor([0, 1, 1])).algorithm, MAT)
    assert mat.infer_groups is api.infer_groups  # re-exported: XRM keeps it for users of XRM alone
    assert get_algorithm_class("MAT") is MAT  # importing mat registered it
    assert set(mat.__all__) >= {"MATLoss", "memorization_aware_shift", "memorization_scores", "infer_groups"}


def test_readme_example_trains_mat_that_beats_erm_on_the_minority():
    code = readme_example()
    assert len(code.strip().splitlines()) <= 25
    mat_line = "mat_loss(model(x), y, index)"
    assert code.count(mat_line) == 1
    erm_code = code.replace(mat_line, "torch.nn.functional.cross_entropy(model(x), y)")  # the same loop, as ERM
    splits = data.spurious_splits(seed=0)
    accuracy = {}
    for name, block in (("MAT", code), ("ERM", erm_code)):
        torch.manual_seed(0)  # the model's initial weights and the loader's shuffles
        namespace = {}  # pasted into a fresh Python: the block makes its own data
        exec(compile(block, "README.md", "exec"), namespace)
        assert torch.equal(namespace["train_x"], splits["tr"].x)  # the fixtures' seed-0 data
        with torch.no_grad():
            accuracy[name] = data.minority_accuracy(namespace["model"](splits["te"].x), splits["te"])
    # measured on test minorities of seeds 0-3: MAT 0.75-0.90, ERM 0.11-0.16 (ERM memorises the
    # training minority through the noise dimensions and keeps following the spurious feature)
    assert accuracy["ERM"] <= 0.3
    assert accuracy["MAT"] >= accuracy["ERM"] + 0.4


def test_mat_loss_is_the_cross_entropy_of_the_shifted_logits():
    held_out = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 1, 0])
    loss = mat.MATLoss(held_out, y, tau=0.5)
    logits = torch.tensor([[0.3, -0.2], [1.0, 2.0]], requires_grad=True)
    index, batch_y = torch.tensor([3, 1]), torch.tensor([0, 1])
    shift = memorization_aware_shift(held_out, y, 0.5)[index]
    expected = F.cross_entropy(logits + shift, batch_y)
    value = loss(logits, batch_y, index)
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)
    value.backward()  # the shift is a constant: the gradient is that of the shifted cross-entropy
    expected_grad = (torch.softmax(logits + shift, 1) - F.one_hot(batch_y, 2)) / 2
    assert torch.allclose(logits.grad, expected_grad, atol=1e-6)


def test_infer_groups_finds_the_minority_and_gives_held_out_logits():
    splits = data.spurious_splits(seed=1)
    train, validation = splits["tr"], splits["va"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", api.DegenerateGroupsWarning)  # groups that split every class do not warn
        result = api.infer_groups(train.x, train.y, hparams={"lr": 1e-2}, num_steps=300,
                                  validation_x=validation.x, validation_y=validation.y)
    minority = (train.a != train.y).long()
    assert result.attributes.tolist() == minority.tolist()  # the cross-mistakes are exactly the minority
    assert result.groups.tolist() == (2 * train.y + minority).tolist()
    assert result.flip_rate == pytest.approx(0.1) and not result.degenerate
    assert result.held_out_logits.shape == (200, 2) and result.validation_attributes.shape == (200,)
    # the held-out twin never trained on a minority example: it follows x_a and gets them wrong
    wrong = result.held_out_logits.argmax(1) != train.y
    assert wrong[minority.bool()].all()


def test_infer_groups_equals_main_py_phase_1_on_the_same_data(tmp_path):
    splits = data.spurious_splits(seed=2, n=80, noise_dim=40)
    path = data.write_features_file(tmp_path / "mine.pt", splits)
    hparams = {**default_hparams("features", "XRM"), "num_steps": 100, "eval_every": 50, "lr": 0.02,
               "batch_size": 16}
    assert fx.run_main(fx.main_args("--phase", "1", "--datasets", str(path), "--out_dir", str(tmp_path / "out"),
                                    "--hparams", json.dumps(hparams))) == 0
    engine = torch.load(tmp_path / "out" / "XRM" / "mine" / "group_labels_no" / "inferred_hpcomb_0_seed0.pt")
    del hparams["eval_every"], hparams["num_steps"]
    mine = api.infer_groups(splits["tr"].x, splits["tr"].y, hparams=hparams, num_steps=100,
                            validation_x=splits["va"].x, validation_y=splits["va"].y)
    assert torch.equal(mine.held_out_logits, engine["tr_ho"])
    assert torch.equal(mine.attributes, engine["tr"]) and torch.equal(mine.validation_attributes, engine["va"])


def test_infer_groups_trains_the_models_of_any_factory():
    splits = data.spurious_splits(seed=0, n=120, noise_dim=20)
    train = splits["tr"]
    made = []

    def factory():
        made.append(torch.nn.Sequential(torch.nn.Linear(22, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)))
        return made[-1]

    result = api.infer_groups(train.x, train.y, factory, num_steps=200, hparams={"lr": 0.05, "batch_size": 32})
    assert len(made) == 2 and not torch.equal(made[0][0].weight, made[1][0].weight)  # two twins, each its own
    minority = train.a != train.y
    found = result.attributes.bool()
    # measured: the twins' cross-mistakes hold every minority example, with few majority ones
    assert found[minority].all() and found[~minority].float().mean() <= 0.1
    assert result.held_out_logits.shape == (120, 2)


@pytest.mark.filterwarnings("ignore::XRM.api.DegenerateGroupsWarning")  # five steps may split no class
def test_an_mlp_factory_trains_on_the_stacked_path():
    splits = data.spurious_splits(seed=0, n=40, noise_dim=4)
    result = api.infer_groups(splits["tr"].x, splits["tr"].y, lambda: MLP(6, 8, 2), num_steps=5)
    assert result.held_out_logits.shape == (40, 2) and torch.isfinite(result.held_out_logits).all()


@pytest.mark.parametrize("x, y, kwargs, message", [
    (torch.zeros(4, 3), torch.tensor([0, 1, 0]), {}, "the training set has 4 inputs but 3 labels"),
    (torch.zeros(3, 3), torch.tensor([0.0, 1.0, 0.0]), {}, "labels must be a non-empty 1-D integer tensor"),
    (torch.zeros(3, 3), torch.tensor([0, -1, 1]), {}, "labels must be class indices 0 .. K-1, got -1"),
    (torch.full((3, 3), float("nan")), torch.tensor([0, 1, 0]), {}, "inputs hold NaN or Inf"),
    (torch.zeros(3, 3), torch.tensor([0, 0, 0]), {}, "at least two classes"),
    (torch.zeros(3, 3), torch.tensor([0, 1, 0]), {"hparams": {"learning_rate": 1}}, "unknown hyper-parameter"),
    (torch.zeros(3, 3), torch.tensor([0, 1, 0]), {"hparams": {"lr": -1.0}}, "hyper-parameter lr = -1.0"),
    (5 * torch.randn(40, 3), torch.arange(40) % 2, {"hparams": {"lr": 1e30, "batch_size": 8}, "num_steps": 20},
     "XRM's twins diverged (their weights are no longer finite): lower hparams['lr']"),
    (torch.zeros(4), torch.tensor([0, 1, 0, 1]), {}, "the training inputs must be [n, ...], one row per example; "
                                                      "got shape (4,) (one feature per example: pass x[:, None])"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), {"validation_x": torch.zeros(2, 3), "validation_y": torch.tensor([0, 2])},
     "the validation labels go up to 2, but the training labels have 2 classes (0 .. 1)"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), {"validation_x": torch.zeros(2, 3)},
     "give validation_x and validation_y together, or neither"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), {"validation_x": torch.zeros(2, 5), "validation_y": torch.tensor([0, 1])},
     "the validation inputs are (5,) per example, the training inputs (3,)"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), {"seed": -1}, "seed -1: give an integer from 0 to 2**63 - 1"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), {"seed": 2**64}, f"seed {2**64}: give an integer from 0 to 2**63 - 1"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), {"num_steps": 1}, "hyper-parameter num_steps = 1: it must be an integer >= 2"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), {"model_factory": lambda: torch.nn.Linear(3, 5)},
     "the model_factory's model maps an example of shape (1, 3) to (1, 5), but the training labels have 2 classes: "
     "it must output logits [B, 2]"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), {"model_factory": lambda: torch.nn.Linear(7, 2)},
     "the model_factory's model cannot read a training example of shape (1, 3): RuntimeError: mat1 and mat2 shapes"),
])
def test_bad_tensors_are_one_line_user_errors(x, y, kwargs, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        api.infer_groups(x, y, **kwargs)
    assert "\n" not in str(error.value)


def test_a_batch_size_above_n_is_clamped_to_the_whole_set():
    splits = data.spurious_splits(seed=0, n=40, noise_dim=4)
    train = splits["tr"]
    whole = api.infer_groups(train.x, train.y, num_steps=30, hparams={"batch_size": 40, "lr": 0.01})
    above = api.infer_groups(train.x, train.y, num_steps=30, hparams={"batch_size": 400, "lr": 0.01})
    assert torch.equal(whole.held_out_logits, above.held_out_logits) and torch.equal(whole.attributes, above.attributes)


def test_a_factory_model_is_probed_without_moving_its_batch_norm_statistics():
    splits = data.spurious_splits(seed=0, n=40, noise_dim=4)
    made = []

    def factory():
        made.append(torch.nn.Sequential(torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2)))
        return made[-1]

    with pytest.raises(UserError, match="num_steps = 1"):  # refused before any model is made
        api.infer_groups(splits["tr"].x, splits["tr"].y, factory, num_steps=1)
    assert made == []
    with pytest.raises(UserError, match="maps an example of shape \\(1, 6\\) to \\(1, 2\\), but the training labels "
                                        "have 3 classes"):
        api.infer_groups(splits["tr"].x, splits["tr"].y.clamp(max=1) + (splits["tr"].y == 1).long(), factory,
                         num_steps=5)
    assert made[0].training and torch.equal(made[0][0].running_mean, torch.zeros(6))


@pytest.mark.parametrize("make, message", [
    (lambda: mat.MATLoss(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), torch.tensor([0, 1])),
     "MATLoss: held_out_logits hold 1 NaN or Inf values"),
    (lambda: mat.MATLoss(torch.tensor([[0.0, float("inf")], [1.0, 0.0]]), torch.tensor([0, 1])),
     "MATLoss: held_out_logits hold 1 NaN or Inf values"),
    (lambda: mat.MATLoss(torch.zeros(2, 2), torch.tensor([0, 2])),
     "MATLoss: labels y lie in 0 .. 2, but the held-out logits have 2 classes (0 .. 1)"),
    (lambda: mat.MATLoss(torch.zeros(2, 2), torch.tensor([0, -1])),
     "MATLoss: labels y lie in -1 .. 0, but the held-out logits have 2 classes (0 .. 1)"),
    (lambda: mat.MATLoss(torch.zeros(2, 2), torch.tensor([0, 1]), tau=float("nan")),
     "hyper-parameter tau = nan: it must be a finite number > 0"),
    (lambda: mat.MATLoss(torch.zeros(2, 2), torch.tensor([0, 1]), tau=float("inf")),
     "hyper-parameter tau = inf: it must be a finite number > 0"),
    (lambda: mat.MATLoss(torch.zeros(2, 2), torch.tensor([0, 1]), tau=0.0),
     "hyper-parameter tau = 0.0: it must be a finite number > 0"),
    (lambda: mat.MATLoss(torch.zeros(2), torch.tensor([0, 1])),
     "MATLoss: held_out_logits must be a float tensor [n, K]"),
    (lambda: mat.MATLoss(torch.zeros(3, 2), torch.tensor([0, 1, 1]))(torch.zeros(2, 2), torch.tensor([0, 1]),
                                                                     torch.tensor([0, 3])),
     "MATLoss: index must hold training-example ids 0 .. 2 and y labels 0 .. 1; got index 0 .. 3, y 0 .. 1"),
    (lambda: mat.MATLoss(torch.zeros(3, 2), torch.tensor([0, 1, 1]))(torch.zeros(2, 2), torch.tensor([0, 1]),
                                                                     torch.tensor([-1, 2])),
     "got index -1 .. 2"),
    (lambda: mat.MATLoss(torch.zeros(3, 2), torch.tensor([0, 1, 1]))(torch.zeros(2, 2), torch.tensor([0, 2]),
                                                                     torch.tensor([0, 1])),
     "got index 0 .. 1, y 0 .. 2"),
    (lambda: mat.MATLoss(torch.zeros(3, 2), torch.tensor([0, 1, 1]))(torch.zeros(2, 3), torch.tensor([0, 1]),
                                                                     torch.tensor([0, 1])),
     "MATLoss: expected logits [B, 2], y [B] and index [B]; got (2, 3), (2,) and (2,)"),
])
def test_mat_loss_refuses_bad_tensors_in_one_line(make, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        make()
    assert "\n" not in str(error.value)


def test_mat_loss_at_the_last_index_is_that_examples_shift():
    held_out, y = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]]), torch.tensor([0, 1, 1])
    logits, batch_y = torch.tensor([[0.3, -0.2]]), torch.tensor([1])
    expected = F.cross_entropy(logits + memorization_aware_shift(held_out, y, 0.1)[2:], batch_y)
    assert mat.MATLoss(held_out, y)(logits, batch_y, torch.tensor([2])).item() == pytest.approx(expected.item(), abs=1e-6)


def test_degenerate_inferred_groups_warn_with_what_they_mean_and_what_to_try():
    y = data.spurious_splits(seed=1)["tr"].y
    with pytest.warns(api.DegenerateGroupsWarning) as warned:  # inputs that tell no example apart split no class
        result = api.infer_groups(torch.ones(len(y), 4), y, num_steps=5)
    assert result.degenerate and len(warned) == 1
    message = str(warned[0].message)
    assert message.startswith("XRM's inferred groups are degenerate: in some class")
    assert "num_steps" in message and "hparams['lr']" in message and "seed" in message
    assert warned[0].filename == __file__  # it points at the caller's line
