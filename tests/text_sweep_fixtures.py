"""Sweeps of three phase-2 BERT runs per algorithm on a generated CivilComments, for the --stack_text_runs tests."""
from pathlib import Path

import backbone_fixtures as fx
import numpy as np
import pytest
from conftest import comparable

from XRM.results.records import read_results
from XRM.runs.sweep import SweepSpec, make_runs, plan_stacks
from XRM.runs.train import train_stack

#: 9 steps, evaluated at 0, 4 and 8, at lr 1e-3 (the drawn rates, about 1e-5, barely move a random tiny BERT
#: in 9 steps); each run keeps its drawn batch size (17, 31, 19) and weight decay
STEPS = {"num_steps": 9, "eval_every": 4, "lr": 1e-3}


#: float32 rounding of a 1-layer BERT's accuracies and learning rates, alone and stacked (measured: equal)
TOLERANCE = 1e-6
#: training losses, AdamW's steps on nearly cancelling gradients included (measured: at most 5.1e-6)
LOSS_TOLERANCE = 2e-5
#: what every comparison of a stacked sweep's records with its runs alone allows
TOLERANCES = {"train_loss": LOSS_TOLERANCE}


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    """A CivilComments of 120 comments (72 to train on) and two tiny BERTs: without dropout, and with BERT's 0.1."""
    root = tmp_path_factory.mktemp("text")
    fx.write_civilcomments(root / "data", *comments(120))
    return (root / "data", fx.write_tiny_bert(root / "bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
            fx.write_tiny_bert(root / "bert-dropout"))


def comments(count: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    """``count`` comments of 1 to 12 of the tiny vocabulary's words, and their (split, y, a): 60% training,
    20% validation, 20% test; toxic (y) when they hold 'awful', 'bad' or 'hate', the attribute a word's."""
    generator = np.random.default_rng(0)
    texts, rows = [], []
    for number in range(count):
        words = list(generator.choice(fx.WORDS, size=generator.integers(1, 13)))
        split = 0 if number % 5 < 3 else number % 5 - 2
        texts.append(" ".join(words))
        rows.append((split, int(bool({"awful", "bad", "hate"} & set(words))), int("people" in words)))
    return texts, rows


def text_sweep(data: Path, bert: Path, out: Path, stack_text_runs: bool, device: str = "cpu",
               test_every_evaluation: bool = False, algorithms: tuple[str, ...] = ("ERM",), phase: int = 2,
               **hparams) -> SweepSpec:
    """Three runs of each of ``algorithms`` (of ``phase``: 1, XRM's, without group labels; 2 with them) on the
    CivilComments in ``data``, each with its own drawn batch size and weight decay (``hparams``: other
    hyper-parameters)."""
    return SweepSpec(phase=phase, datasets=["CivilComments"], algorithms=list(algorithms),
                     group_labels="yes" if phase == 2 else "no",
                     data_path=str(data),
                     out_dir=str(out), num_hparams_combs=3, device=device, num_workers=0, text_model=str(bert),
                     stack_text_runs=stack_text_runs, checkpoint_seconds=0.0, test_every_evaluation=test_every_evaluation,
                     hparams_overrides={**STEPS, **hparams})


def train_sweep(spec: SweepSpec, stack_size: int | None = None) -> list[int]:
    """Train the sweep as main.py does; returns its stacks' sizes."""
    stacks = plan_stacks(make_runs(spec), stack_size)
    for stack in stacks:
        train_stack(stack)
    return [len(stack) for stack in stacks]


def records_by_file(out: Path) -> dict[str, list[dict]]:
    """Every run's evaluation records, by results file (its path under ``out``)."""
    return {str(path.relative_to(out)): read_results(path)[1] for path in sorted(out.rglob("results_*.json"))}


def assert_records_close(found: dict[str, list[dict]], expected: dict[str, list[dict]], tolerances: dict[str, float],
                         default: float | None, steps: tuple[int, ...] | None = (0, 4, 8)) -> None:
    """The same runs, ``steps`` (None: any, the same in both) and keys; each key's values within
    ``tolerances[key]``, the other keys' within ``default`` (None: not compared; null test metrics: null in both);
    timings left out."""
    assert list(found) == list(expected) and len(found) >= 3
    for name in expected:
        ours, theirs = comparable(found[name]), comparable(expected[name])
        assert [list(record) for record in ours] == [list(record) for record in theirs]
        assert [record["step"] for record in ours] == [record["step"] for record in theirs]
        assert steps is None or [record["step"] for record in ours] == list(steps)
        for mine, record in zip(ours, theirs):
            for key, value in record.items():
                tolerance = tolerances.get(key, default)
                if tolerance is not None:
                    assert mine[key] == pytest.approx(value, abs=tolerance), (name, record["step"], key)
