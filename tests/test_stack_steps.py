"""XRM/engine/stack_steps.py: the engine (train_stack, with files) and InMemoryStack (no files) take the same steps."""
from pathlib import Path

import torch
from spurious_features import write_spurious_features

from XRM.engine.in_memory import InMemoryStack, StackRun
from XRM.networks.classifiers import build_network
from XRM.runs.inputs import load_inputs
from XRM.runs.sweep import SweepSpec, make_runs, plan_stacks
from XRM.runs.train import train_stack

STEPS = 40


def test_in_memory_stack_ends_where_the_engine_ends(tmp_path: Path):
    features = write_spurious_features(tmp_path / "spurious.pt", n_train=120, n_evaluation=60, noise_dim=8)
    spec = SweepSpec(phase=2, datasets=[str(features)], algorithms=["GroupDRO"], group_labels="yes",
                     data_path=str(tmp_path), out_dir=str(tmp_path / "out"), num_hparams_combs=2, device="cpu",
                     hparams_overrides={"num_steps": STEPS, "eval_every": 20})
    [stack] = plan_stacks(make_runs(spec))
    assert len(stack) == 2  # two hyper-parameter combinations trained as one stack
    train_stack(stack)
    engine = [torch.load(run.files.checkpoint) for run in stack]
    assert [checkpoint["step"] for checkpoint in engine] == [STEPS - 1, STEPS - 1]

    data, setups = load_inputs(stack, torch.device("cpu"))
    train = data.splits["tr"]
    runs = []
    for setup in setups:  # each run's network drawn from its seed, as the engine draws it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(setup.spec.seed)
            network = build_network(data.family, tuple(train.x.shape[1:]), data.num_classes, setup.hparams)
        runs.append(StackRun([network], setup.hparams, setup.spec.seed))
    initial = runs[0].networks[0].state_dict()["weight"].clone()
    memory = InMemoryStack("GroupDRO", train.x, train.y, runs, data.num_classes,
                           attributes=setups[0].train_attributes)
    memory.train(STEPS)

    for h, checkpoint in enumerate(engine):
        mine = memory.model.model_state(h)
        assert set(mine) == {"weight", "bias"} and mine["weight"].shape == (2, 10)
        assert all(torch.equal(mine[key], checkpoint["model"][key]) for key in mine)  # bit for bit
        # GroupDRO's group weights [4] (the engine's algorithm state) end equal too, and moved from uniform
        assert torch.equal(memory.state["q"][h].cpu(), checkpoint["algorithm_state"]["q"])
        assert not torch.allclose(checkpoint["algorithm_state"]["q"], torch.full((4,), 0.25, dtype=torch.float64))
    assert not torch.equal(engine[0]["model"]["weight"], engine[1]["model"]["weight"])  # the runs differ
    assert (engine[0]["model"]["weight"] - initial).abs().max() > 1e-3  # and they trained
