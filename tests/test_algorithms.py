"""Every algorithm as a loss over a stack, its parts on hand-computed numbers, samplers and the stacked optimiser."""
import math

import pytest
import torch
import torch.nn.functional as F

from mat.algorithm import MAT
from XRM.algorithms import ALGORITHMS, Batch, RunData, get_algorithm_class
from XRM.algorithms.group_robust import IRM, GroupDRO
from XRM.common.sampling import StepSampler, group_balancing_weights, subsample_to_smallest_group
from XRM.engine.model_stacks import ParameterStack
from XRM.engine.optimizers import StackedOptimizer
from XRM.networks.classifiers import LinearHead

HPARAMS = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, "eta": 0.1, "lambda": 10.0,
           "penalty_anneal_iters": 2, "tau": 0.1, "num_steps": 10, "jtt_T_fraction": 0.2, "jtt_lambda_up": 5.0,
           "ula_T_fraction": 0.2, "ula_eta": 1.0, "ula_teacher_temperature": 1.0, "lff_q": 0.7, "lff_ema": 0.7,
           "dfr_c": 0.3, "afr_gamma": 4.0, "afr_lambda": 0.1, "bam_T_fraction": 0.2,
           "bam_lambda": 50.0, "bam_mu": 20.0, "bam_stage_2": "One-M", "eiil_steps": 10, "eiil_lr": 1e-3, "dpe_entropic_scale": 30.0,
           "dpe_diversity": 5e4, "dpe_diversity_decay": 0.05, "dpe_prototype_decay": 10.0}


def _data(n: int = 16) -> tuple[RunData, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=generator)
    y = (x[:, 0] > 0).long()
    a = (x[:, 1] > 0).long()
    logits = torch.randn(n, 2, generator=generator)
    base_model = {"weight": torch.randn(2, 3, generator=generator), "bias": torch.zeros(2)}  # AFR's
    return RunData(y, y * 2 + a, 2, 4, 2, seed=0, hparams=HPARAMS, held_out_logits=logits, base_model=base_model), x


def _stacked_state(algorithm, run: RunData) -> dict:
    return {key: value[None] for key, value in algorithm.initial_state(run).items()}


def _batch(run: RunData, step: int = 0) -> Batch:
    n = len(run.y)
    return Batch(torch.arange(n)[None], run.y[None], run.groups[None], torch.ones(1, n), torch.rand(1, n), step)


def _hparams(algorithm) -> dict:
    return {name: torch.tensor([float(HPARAMS[name])]) for name in algorithm.hparam_names}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_algorithm_trains_a_stack_of_one(name):
    run, x = _data()
    cls = get_algorithm_class(name)
    algorithm = cls(2)
    networks = [LinearHead(3, 2) for _ in range(cls.networks_per_run)]
    algorithm.initialise_networks(networks, HPARAMS)
    stack = ParameterStack([networks], [HPARAMS], torch.float32, torch.device("cpu"), cls.head)
    state = _stacked_state(algorithm, run)
    before = [p.detach().clone() for p in stack.parameters()]
    for step in range(3):
        losses, state = algorithm.loss(stack.forward(x[None]), _batch(run, step), state, _hparams(algorithm))
        assert losses.shape == (1,) and torch.isfinite(losses).all()
        stack.step(losses.sum())
    assert any(not torch.equal(b, a) for b, a in zip(before, stack.parameters()))
    logits = stack.predict(x)
    per_run = cls.networks_per_run
    assert logits.shape == ((1, 16, 2, per_run) if per_run > 1 else (1, 16, 2)) and torch.isfinite(logits).all()
    if cls.phase == 2:  # phase 2 classifies with one set of logits (phase 1 keeps its twins')
        assert algorithm.evaluation_logits(logits).shape == (1, 16, 2)


def test_group_dro_weights_follow_group_losses_exactly():
    run, _ = _data()
    group_dro = GroupDRO(2)
    state = _stacked_state(group_dro, run)
    batch = Batch(torch.arange(4)[None], torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 0, 3, 3]]), torch.ones(1, 4),
                  None, 0)
    _, state = group_dro.loss(torch.zeros(1, 4, 2), batch, state, _hparams(group_dro))  # every loss is log 2
    # groups 0 and 3 had loss log 2: q_g ∝ 0.25 * exp(0.1 log 2); groups 1, 2 stay at 0.25
    up = 0.25 * math.exp(0.1 * math.log(2))
    total = 2 * up + 0.5
    assert state["q"][0].tolist() == pytest.approx([up / total, 0.25 / total, 0.25 / total, up / total])


def test_padding_changes_no_loss():
    run, _ = _data()
    logits = torch.randn(1, 16, 2)
    for cls in (GroupDRO, IRM, MAT, get_algorithm_class("ERM")):
        algorithm = cls(2)
        state = _stacked_state(algorithm, run)
        plain, _ = algorithm.loss(logits, _batch(run), state, _hparams(algorithm))
        padded = Batch(torch.cat([torch.arange(16), torch.full((5,), 16)])[None],
                       torch.cat([run.y, torch.zeros(5, dtype=torch.long)])[None],
                       torch.cat([run.groups, torch.zeros(5, dtype=torch.long)])[None],
                       torch.cat([torch.ones(16), torch.zeros(5)])[None], None, 0)
        padded_logits = torch.cat([logits, torch.randn(1, 5, 2)], dim=1)
        loss, _ = algorithm.loss(padded_logits, padded, state, _hparams(algorithm))
        assert loss.item() == pytest.approx(plain.item(), rel=1e-6), cls.name


def test_irm_penalty_equals_the_autograd_estimate_per_environment():
    run, _ = _data()
    logits = torch.randn(1, 16, 2, generator=torch.Generator().manual_seed(1))
    irm = IRM(2)
    hparams = {"lambda": torch.tensor([10.0]), "penalty_anneal_iters": torch.tensor([0.0])}
    loss, _ = irm.loss(logits, _batch(run, step=5), _stacked_state(irm, run), hparams)
    expected, environments = 0.0, (run.groups % 2)
    for environment in (0, 1):
        member_logits, member_y = logits[0][environments == environment], run.y[environments == environment]
        scale = torch.ones((), requires_grad=True)
        halves = [F.cross_entropy(member_logits[i::2] * scale, member_y[i::2]) for i in (0, 1)]
        grads = [torch.autograd.grad(half, [scale])[0] for half in halves]
        expected += F.cross_entropy(member_logits, member_y).item() + 10.0 * (grads[0] * grads[1]).item()
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)


def test_mat_shift_enters_training_only():
    run, _ = _data()
    mat = MAT(2)
    state = _stacked_state(mat, run)
    assert state["shift"].shape == (1, 17, 2)  # one padding row
    loss, _ = mat.loss(torch.zeros(1, 16, 2), _batch(run), state, {})
    expected = F.cross_entropy(state["shift"][0, :16], run.y)
    assert loss.item() == pytest.approx(expected.item())
    assert torch.equal(mat.evaluation_logits(torch.ones(1, 16, 2)), torch.ones(1, 16, 2))  # no shift at evaluation


def test_samplers_balance_and_subsample_groups():
    groups = torch.tensor([0] * 6 + [1] * 2 + [2] * 4)
    weights = group_balancing_weights(groups)
    assert weights[:6].sum().item() == pytest.approx(1.0)
    assert weights[6:8].sum().item() == pytest.approx(1.0)
    subset = subsample_to_smallest_group(groups, torch.Generator().manual_seed(1))
    assert torch.bincount(groups[subset]).tolist() == [2, 2, 2]
    sampler = StepSampler(torch.arange(12), 4, seed=2)
    epoch = torch.cat([sampler.batch(step) for step in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))  # one epoch sees every example once
    assert not torch.equal(epoch, torch.cat([sampler.batch(step) for step in range(3, 6)]))  # reshuffled
    # a batch depends on (seed, step) only: a fresh sampler resumed at step 7 draws the same
    assert torch.equal(StepSampler(torch.arange(12), 4, seed=2).batch(7), sampler.batch(7))
    assert torch.equal(sampler.batches(2, 9), torch.stack([sampler.batch(step) for step in range(2, 9)]))
    balanced = StepSampler(torch.arange(12), 3000, seed=0, weights=weights)
    assert torch.bincount(groups[balanced.batch(0)]).tolist() == pytest.approx([1000, 1000, 1000], abs=100)
    resumed = StepSampler(torch.arange(12), 3000, seed=0, weights=weights)
    assert torch.equal(resumed.batches(70, 72), balanced.batches(60, 72)[10:])  # across a block boundary


@pytest.mark.parametrize("name,kwargs", [("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.0}), ("adam", {}),
                                         ("adamw", {})])
def test_stacked_optimiser_matches_torch_optim_run_by_run(name, kwargs):
    generator = torch.Generator().manual_seed(0)
    lrs, decays = [0.1, 0.01, 0.03], [0.0, 0.1, 0.01]
    weights = torch.randn(3, 2, 4, generator=generator, dtype=torch.float64)
    biases = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    grads = [(torch.randn(3, 2, 4, generator=generator, dtype=torch.float64),
              torch.randn(3, 2, generator=generator, dtype=torch.float64)) for _ in range(4)]
    stacked = [weights.clone().requires_grad_(True), biases.clone().requires_grad_(True)]
    optimizer = StackedOptimizer(name, stacked, [True, False], torch.tensor(lrs, dtype=torch.float64),
                                 torch.tensor(decays, dtype=torch.float64),
                                 torch.full((3,), kwargs.get("momentum", 0.9), dtype=torch.float64))
    for weight_grad, bias_grad in grads:
        stacked[0].grad, stacked[1].grad = weight_grad.clone(), bias_grad.clone()
        optimizer.step()
    for run in range(3):
        single = [weights[run].clone().requires_grad_(True), biases[run].clone().requires_grad_(True)]
        groups = [{"params": [single[0]], "weight_decay": decays[run]}, {"params": [single[1]], "weight_decay": 0.0}]
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
        reference = cls(groups, lr=lrs[run], **kwargs)
        for weight_grad, bias_grad in grads:
            single[0].grad, single[1].grad = weight_grad[run].clone(), bias_grad[run].clone()
            reference.step()
        assert torch.allclose(stacked[0][run], single[0], rtol=1e-12, atol=1e-14)
        assert torch.allclose(stacked[1][run], single[1], rtol=1e-12, atol=1e-14)


def test_group_dro_without_group_labels_weighs_the_classes_only():
    """--group_labels no: the groups are the classes, q has one entry per class (the reference keeps 2K entries,
    half never present, which halves its early loss; see README's differences)."""
    y = torch.tensor([0, 0, 0, 1])
    run = RunData(y, y, 2, 2, 1, seed=0, hparams=HPARAMS)
    group_dro = GroupDRO(2)
    state = _stacked_state(group_dro, run)
    assert state["q"].tolist() == [[0.5, 0.5]]
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 3.0]]])
    loss, state = group_dro.loss(logits, Batch(torch.arange(4)[None], y[None], y[None], torch.ones(1, 4), None, 1),
                                 state, _hparams(group_dro))
    per_class = torch.stack([F.cross_entropy(logits[0, :3], y[:3]), F.cross_entropy(logits[0, 3:], y[3:])])
    q = 0.5 * torch.exp(0.1 * per_class)
    q = q / q.sum()
    assert state["q"][0].tolist() == pytest.approx(q.tolist())
    assert loss.item() == pytest.approx((q * per_class).sum().item(), rel=1e-6)
