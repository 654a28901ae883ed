"""JTT, uLA and LfF: their defining steps on hand-computed numbers, exact freezing of a network, each
method against ERM on spurious data, stacked runs against runs alone, and an interrupted run resumed."""
import math
from pathlib import Path

import pytest
import torch
from conftest import comparable

from XRM.algorithms import Batch, RunData, get_algorithm_class
from XRM.algorithms.two_networks import (class_maxima, generalized_cross_entropy, jtt_weights, switch_step,
                                         ula_adjustment, ula_batch_joint)
from XRM.common.errors import UserError
from XRM.data.feature_file import save_feature_file
from XRM.data.synthetic import SpuriousDataSpec, make_spurious_splits
from XRM.engine.model_stacks import ModuleStack
from XRM.engine.optimizers import StackedOptimizer
from XRM.networks.classifiers import TwinNetwork
from XRM.results.records import read_results
from XRM.results.selection import selected_record
from XRM.runs.hparams import check_hparams, random_hparams
from XRM.runs.sweep import SweepSpec, make_runs, plan_stacks
from XRM.runs.train import StackTrainer, train_stack

LOG = math.log


def _batch(y: list[int], index: list[int] | None = None, step: int = 0) -> Batch:
    y_tensor = torch.tensor([y])
    index_tensor = torch.tensor([index if index is not None else list(range(len(y)))])
    return Batch(index_tensor, y_tensor, y_tensor, torch.ones(1, len(y), dtype=torch.float64), None, step)


def _run(y: list[int], **hparams) -> RunData:
    labels = torch.tensor(y)
    return RunData(labels, labels, 2, 2, 1, seed=0, hparams={"num_steps": 8, **hparams})


def _stacked(state: dict) -> dict:
    return {key: value[None] for key, value in state.items()}


def _ce(logits: list[float], label: int) -> float:
    return -math.log(math.exp(logits[label]) / sum(math.exp(v) for v in logits))


def test_no_training_groups_and_every_group_label_source_for_selection():
    for name in ("JTT", "uLA", "LfF"):
        cls = get_algorithm_class(name)
        assert (cls.group_information, cls.accepted_group_labels, cls.networks_per_run) == (
            "none", ("yes", "no", "inferred"), 2)


def test_switch_step_gives_each_stage_a_step():
    assert switch_step(0.25, 8) == 2
    assert switch_step(0.001, 100) == 1
    assert switch_step(0.999, 10) == 9


def test_jtt_error_set_weights_and_stages():
    biased = [[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]]  # predicts 0, 1, 0, 1
    final = [[1.0, 0.0], [0.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    y = [0, 0, 1, 1]  # errors: examples 1 and 2
    weights = jtt_weights(torch.tensor([biased], dtype=torch.float64), torch.tensor([y]), torch.tensor([5.0]))
    assert weights.tolist() == [[1.0, 5.0, 5.0, 1.0]]
    jtt = get_algorithm_class("JTT")(2)
    state = _stacked(jtt.initial_state(_run(y, jtt_T_fraction=0.25)))  # T = 2 of 8 steps
    assert state["switch_step"].tolist() == [2]
    logits = torch.stack([torch.tensor(biased), torch.tensor(final)], dim=-1)[None].double()
    hparams = {"jtt_lambda_up": torch.tensor([5.0], dtype=torch.float64)}
    before, _ = jtt.loss(logits, _batch(y, step=1), state, hparams)
    after, _ = jtt.loss(logits, _batch(y, step=2), state, hparams)
    assert before.item() == pytest.approx(sum(_ce(b, label) for b, label in zip(biased, y)) / 4)
    weighted = [1, 5, 5, 1]
    expected = sum(w * _ce(f, label) for w, f, label in zip(weighted, final, y)) / sum(weighted)
    assert after.item() == pytest.approx(expected)
    assert jtt.network_updates(torch.tensor(1), state, hparams).tolist() == [[True, False]]
    assert jtt.network_updates(torch.tensor(2), state, hparams).tolist() == [[False, True]]
    assert torch.equal(jtt.evaluation_logits(logits), logits[..., 1])


def test_ula_joint_table_and_adjustment():
    # teacher temperature 2: softmax([log 9, 0] / 2) = [0.75, 0.25]
    biased = torch.tensor([[[LOG(9), 0.0], [0.0, LOG(9)]]], dtype=torch.float64)
    y, mask = torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.float64)
    joint = ula_batch_joint(biased, y, mask, torch.tensor([2.0], dtype=torch.float64))
    assert joint[0].tolist() == [[pytest.approx(0.375), pytest.approx(0.125)],
                                 [pytest.approx(0.125), pytest.approx(0.375)]]
    adjustment = ula_adjustment(joint + 0.25, biased)  # rows [0.625, 0.375] and [0.375, 0.625]
    assert adjustment[0].tolist() == [[pytest.approx(LOG(0.625)), pytest.approx(LOG(0.375))],
                                      [pytest.approx(LOG(0.375)), pytest.approx(LOG(0.625))]]
    ula = get_algorithm_class("uLA")(2)
    state = _stacked(ula.initial_state(_run([0, 1], ula_T_fraction=0.25)))
    assert state["joint"][0].tolist() == [[0.25, 0.25], [0.25, 0.25]]
    logits = torch.stack([biased[0], torch.zeros(2, 2, dtype=torch.float64)], dim=-1)[None]
    hparams = {"ula_eta": torch.tensor([2.0], dtype=torch.float64),
               "ula_teacher_temperature": torch.tensor([2.0], dtype=torch.float64)}
    _, unchanged = ula.loss(logits, _batch([0, 1], step=1), state, hparams)
    assert torch.equal(unchanged["joint"], state["joint"])  # the proxy still trains: no table yet
    loss, after = ula.loss(logits, _batch([0, 1], step=2), state, hparams)
    assert after["joint"][0].tolist() == [[pytest.approx(0.625), pytest.approx(0.375)],
                                          [pytest.approx(0.375), pytest.approx(0.625)]]
    # f = 0: the adjusted logits are 2 log p(y | y_b), so p(true class) = 0.625^2 / (0.625^2 + 0.375^2)
    assert loss.item() == pytest.approx(-LOG(0.625 ** 2 / (0.625 ** 2 + 0.375 ** 2)))


def test_generalised_cross_entropy_and_its_gradient():
    logits = torch.tensor([[[LOG(3), 0.0]]], dtype=torch.float64, requires_grad=True)  # p_0 = 0.75
    gce = generalized_cross_entropy(logits, torch.tensor([[0]]), torch.tensor([0.5]))
    assert gce.item() == pytest.approx((1 - 0.75 ** 0.5) / 0.5)
    gce.sum().backward()
    # p_y^q times the cross-entropy's gradient softmax - onehot = [-0.25, 0.25]
    assert logits.grad[0, 0].tolist() == [pytest.approx(-0.25 * 0.75 ** 0.5), pytest.approx(0.25 * 0.75 ** 0.5)]
    assert class_maxima(torch.tensor([[1.0, 3.0, 2.0]]), torch.tensor([[0, 0, 1]]), 2).tolist() == [[3.0, 2.0]]


def _two_class_logits(ratio: float, label: int) -> list[float]:
    """Logits whose cross-entropy for ``label`` is log(1 + ratio)."""
    return [0.0, LOG(ratio)] if label == 0 else [LOG(ratio), 0.0]


def test_lff_averages_normalised_difficulty_and_loss():
    lff = get_algorithm_class("LfF")(2)
    labels = [0, 0, 1]
    state = _stacked(lff.initial_state(_run(labels)))
    hparams = {"lff_q": torch.tensor([0.7], dtype=torch.float64), "lff_ema": torch.tensor([0.7], dtype=torch.float64)}

    def step(examples, biased_ratios, debiased_ratios, state):
        y = [labels[i] for i in examples]
        biased = [_two_class_logits(r, c) for r, c in zip(biased_ratios, y)]
        debiased = [_two_class_logits(r, c) for r, c in zip(debiased_ratios, y)]
        logits = torch.stack([torch.tensor(biased), torch.tensor(debiased)], dim=-1)[None].double()
        return lff.loss(logits, _batch(y, examples), state, hparams)

    _, state = step([0, 2], [1.0, 3.0], [3.0, 1.0], state)  # first losses seed the averages
    assert state["average_biased"][0].tolist() == pytest.approx([LOG(2), 0.0, LOG(4), 0.0])  # row 3: the padding row
    assert state["seen"][0, :3].tolist() == [True, False, True]
    loss, state = step([0, 1], [1 / 3, 7.0], [1.0, 1.0], state)
    b0, d0 = 0.7 * LOG(2) + 0.3 * LOG(4 / 3), 0.7 * LOG(4) + 0.3 * LOG(2)
    assert state["average_biased"][0, :2].tolist() == pytest.approx([b0, LOG(8)])
    assert state["average_debiased"][0, :2].tolist() == pytest.approx([d0, LOG(2)])
    max_b, max_d = LOG(8), d0  # class 0's largest averages
    weights = [(b0 / max_b) / (b0 / max_b + d0 / max_d), 1.0 / (1.0 + LOG(2) / max_d)]
    gce = [(1 - (1 / (1 + r)) ** 0.7) / 0.7 for r in (1 / 3, 7.0)]
    expected = sum(gce) / 2 + (weights[0] * LOG(2) + weights[1] * LOG(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_a_network_left_out_stays_exactly_put_and_starts_later_as_a_fresh_one(name):
    """Network 0 trains on steps 0-1, network 1 on steps 2-3: each equals torch.optim trained on its own steps."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(2, 2, 3, generator=generator, dtype=torch.float64)
    grads = [torch.randn(2, 2, 3, generator=generator, dtype=torch.float64) for _ in range(4)]
    lr, decay = [0.1, 0.03], [0.01, 0.1]
    stacked = [weights.clone().requires_grad_(True)]
    optimizer = StackedOptimizer(name, stacked, [True], torch.tensor(lr, dtype=torch.float64),
                                 torch.tensor(decay, dtype=torch.float64), torch.full((2,), 0.9, dtype=torch.float64),
                                 networks_per_run=2)
    for step, grad in enumerate(grads):
        stacked[0].grad = grad.clone()
        optimizer.step(torch.tensor([[step < 2, step >= 2]] * 2))
    assert optimizer.network_steps.tolist() == [[2.0, 2.0], [2.0, 2.0]]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    for run in range(2):
        for network, steps in ((0, grads[:2]), (1, grads[2:])):
            single = weights[run, network].clone().requires_grad_(True)
            reference = cls([single], lr=lr[run], weight_decay=decay[run], **({"momentum": 0.9} if name == "sgd" else {}))
            for grad in steps:
                single.grad = grad[run, network].clone()
                reference.step()
            assert torch.allclose(stacked[0][run, network], single, rtol=1e-12, atol=1e-14), (run, network)


def test_a_backbone_twin_left_out_is_not_updated_and_predicts_in_evaluation_mode():
    torch.manual_seed(0)

    def net() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))

    network = TwinNetwork(net(), net())
    stack = ModuleStack(network, {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.1, "num_steps": 4},
                        torch.device("cpu"), num_workers=0)
    before = {key: value.clone() for key, value in network.state_dict().items()}
    frozen_input = torch.randn(5, 3)
    frozen_logits = network.twins[1].eval()(frozen_input)
    active = torch.tensor([[True, False]])
    for _ in range(2):
        stack.set_training_networks(active)
        stack.step(network(torch.randn(5, 3)).square().sum(), active)
    after = network.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before if key.startswith("twins.1."))  # BN stats too
    assert not torch.equal(before["twins.0.0.weight"], after["twins.0.0.weight"])
    assert not torch.equal(before["twins.0.1.running_mean"], after["twins.0.1.running_mean"])
    assert torch.equal(network(frozen_input)[..., 1], frozen_logits)  # the frozen twin predicts as at freezing
    stack.predict(frozen_input)
    assert [twin.training for twin in network.twins] == [True, False]  # evaluation restores the modes


def test_draws_stay_in_the_papers_ranges_and_bad_values_are_refused():
    for comb in range(50):
        jtt, ula, lff = (random_hparams("features", name, comb) for name in ("JTT", "uLA", "LfF"))
        assert 0.02 <= jtt["jtt_T_fraction"] <= 0.4 and jtt["jtt_lambda_up"] in (4, 5, 6, 20, 50, 100)
        assert 0.09 <= ula["ula_T_fraction"] <= 0.5 and ula["ula_eta"] == ula["ula_teacher_temperature"] == 1.0
        assert lff["lff_q"] == lff["lff_ema"] == 0.7
        check_hparams(jtt), check_hparams(ula), check_hparams(lff)
    with pytest.raises(UserError, match="jtt_T_fraction = 1.5: it must be a number strictly between 0 and 1"):
        check_hparams({"jtt_T_fraction": 1.5})
    with pytest.raises(UserError, match="ula_T_fraction = nan"):
        check_hparams({"ula_T_fraction": float("nan")})
    with pytest.raises(UserError, match="lff_q = 0: it must be a finite number > 0"):
        check_hparams({"lff_q": 0})


# ---------------------------------------------------------------------------- training end to end

#: per method, settings that suit this data (every method's networks: the same lr, batch and decay)
METHOD_HPARAMS = {"JTT": {"jtt_T_fraction": 0.05, "jtt_lambda_up": 100.0}, "uLA": {"ula_T_fraction": 0.05},
                  "LfF": {}}


def _features(directory: Path, noise_dim: int) -> Path:
    """Spurious features: 400 training examples (10% minority), 200 validation and test (50%), 2 + noise_dim dims."""
    path = directory / "spurious.pt"
    splits = make_spurious_splits(0, SpuriousDataSpec(n=400, noise_dim=noise_dim, minority_fraction=0.1),
                                  SpuriousDataSpec(n=200, noise_dim=noise_dim, minority_fraction=0.5))
    save_feature_file({name: {"x": split.x, "y": split.y[:, None], "m": split.a[:, None]}
                       for name, split in splits.items()}, path)
    return path


def _sweep(features: Path, out: Path, algorithms: list[str], overrides: dict, stack_size: int | None = None,
           **options) -> None:
    """Train a sweep in this process, as main.py does (group labels 'yes' and one combination unless given)."""
    spec = SweepSpec(phase=2, datasets=[str(features)], algorithms=algorithms, data_path=str(out), out_dir=str(out),
                     device="cpu", hparams_overrides=overrides, **{"group_labels": "yes", "num_hparams_combs": 1,
                                                                    **options})
    for stack in plan_stacks(make_runs(spec), stack_size):
        train_stack(stack)


def _results(out: Path) -> dict[str, list[dict]]:
    return {str(path.relative_to(out)): read_results(path)[1] for path in sorted(out.rglob("results_*.json"))}


def test_each_method_beats_erm_on_spurious_data(tmp_path):
    """ERM memorises the minority through 398 noise dimensions; measured te_wga at the step va_wga selects:
    ERM 6.5%, JTT 92.7%, uLA 91.3%, LfF 74.5% (float32, this machine)."""
    features = _features(tmp_path, noise_dim=398)
    shared = {"num_steps": 601, "eval_every": 50, "lr": 1e-3, "batch_size": 32, "weight_decay": 1e-4}
    chosen = {}
    for algorithm, extra in {"ERM": {}, **METHOD_HPARAMS}.items():
        _sweep(features, tmp_path / algorithm, [algorithm], {**shared, **extra})
        (run_records,) = _results(tmp_path / algorithm).values()
        chosen[algorithm] = selected_record(run_records, "va_wga")["te_wga"]
    assert chosen["ERM"] < 0.2, chosen
    for algorithm in METHOD_HPARAMS:
        assert chosen[algorithm] > chosen["ERM"] + 0.4, chosen


def test_stacked_runs_equal_the_runs_alone_in_float64(tmp_path):
    features = _features(tmp_path, noise_dim=28)
    outs = {}
    for mode, stack_size in (("stacked", None), ("alone", 1)):
        outs[mode] = tmp_path / mode
        _sweep(features, outs[mode], list(METHOD_HPARAMS), {"num_steps": 61, "eval_every": 20}, dtype="float64",
               num_hparams_combs=2, stack_size=stack_size, group_labels="no")
    stacked, alone = _results(outs["stacked"]), _results(outs["alone"])
    assert len(stacked) == 6
    for path in sorted(outs["stacked"].rglob("results_*.json")):  # evaluations at 0, 20, 40, 60
        header, run_records = read_results(path)
        fraction = {"JTT": "jtt_T_fraction", "uLA": "ula_T_fraction"}.get(header["algorithm"])
        first = switch_step(header["hparams"][fraction], 61) if fraction else 0  # network 1 trains from T: no record before
        assert [record["step"] for record in run_records] == [s for s in (0, 20, 40, 60) if s >= first]
    assert comparable(stacked) == comparable(alone)


def test_an_interrupted_run_resumes_to_the_records_and_weights_of_an_unbroken_one(tmp_path, monkeypatch):
    """Adam (per-network bias corrections), T = 30 of 121 steps; the crash comes at step 40's evaluation,
    so the run resumes from step 20's checkpoint, before T, and crosses T again."""
    features = _features(tmp_path, noise_dim=28)
    settings = {"num_steps": 121, "eval_every": 20}
    fractions = {"JTT": {"jtt_T_fraction": 0.25}, "uLA": {"ula_T_fraction": 0.25}, "LfF": {},
                 "BAM": {"bam_T_fraction": 0.25}}  # BAM's auxiliary logits are state: resumed exactly too
    options = {"dtype": "float64", "adam": True, "checkpoint_seconds": 0.0}
    for algorithm, extra in fractions.items():
        _sweep(features, tmp_path / "unbroken", [algorithm], {**settings, **extra}, **options)
    evaluate = StackTrainer._evaluate

    def crash_at_40(trainer, step):
        if step == 40:
            raise RuntimeError("killed")
        evaluate(trainer, step)

    for algorithm, extra in fractions.items():
        with monkeypatch.context() as patch:
            patch.setattr(StackTrainer, "_evaluate", crash_at_40)
            with pytest.raises(RuntimeError, match="killed"):
                _sweep(features, tmp_path / "resumed", [algorithm], {**settings, **extra}, **options)
        checkpoint = next((tmp_path / "resumed" / algorithm).rglob("ckpt_*.pt"))
        assert torch.load(checkpoint)["step"] == 20
        _sweep(features, tmp_path / "resumed", [algorithm], {**settings, **extra}, resume=True, **options)
    unbroken, resumed = _results(tmp_path / "unbroken"), _results(tmp_path / "resumed")
    counts = {path.split("/")[0]: len(records) for path, records in unbroken.items()}
    assert counts == {"JTT": 5, "uLA": 5, "LfF": 7, "BAM": 5}  # steps 0 .. 120 by 20; two-stage ones from T = 30 on
    assert comparable(resumed) == comparable(unbroken)
    for path in (tmp_path / "unbroken").rglob("ckpt_*.pt"):
        final = [torch.load(root / path.relative_to(tmp_path / "unbroken"))
                 for root in (tmp_path / "unbroken", tmp_path / "resumed")]
        for part in ("model", "algorithm_state"):
            assert all(torch.equal(value, final[1][part][key]) for key, value in final[0][part].items()), path
        assert torch.equal(final[0]["optimizer"]["network_steps"], final[1]["optimizer"]["network_steps"])


def test_two_networks_fine_tune_a_resnet_end_to_end(tmp_path):
    """uLA's twin ResNet-18s (random weights) on six images, 3 steps, T = 2: the joint table gathers the
    one batch after T (a batch's table sums to 1), the proxy is frozen, the best checkpoint holds both twins."""
    import backbone_fixtures as fx

    fx.write_waterbirds(tmp_path / "data")
    out = tmp_path / "out"
    assert fx.run_main(fx.main_args("--phase", "2", "--datasets", "Waterbirds", "--algorithms", "uLA",
                                    "--group_labels", "no", "--data_path", str(tmp_path / "data"), "--out_dir",
                                    str(out), "--inputs", "images", "--image_backbone", "resnet18",
                                    "--backbone_weights", "none", "--checkpoint_seconds", "0", "--hparams",
                                    '{"num_steps": 3, "eval_every": 2, "batch_size": 4, "ula_T_fraction": 0.5}')) == 0
    directory = out / "uLA" / "Waterbirds" / "group_labels_no"
    header, rows = fx.records(directory / "results_hpcomb_0_seed0.json")
    assert header["backbone_used"] == "resnet18" and [r["step"] for r in rows] == [2]  # none before T
    best = torch.load(directory / "best_hpcomb_0_seed0.pt")
    assert {key.split(".")[1] for key in best["model"]} == {"0", "1"}
    final = torch.load(directory / "ckpt_hpcomb_0_seed0.pt")
    assert final["algorithm_state"]["switch_step"].item() == 2
    assert final["algorithm_state"]["joint"].sum().item() == pytest.approx(1.0 + 1)  # uniform table + step 2
