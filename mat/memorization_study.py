"""Memorisation scores of a dataset's training examples for several algorithms, side by side:
the dataset, hyper-parameters and phase-1 file read and checked as main.py reads them, then
mat.memorization's M models on complementary random halves, per algorithm.

Each algorithm trains with its dataset family's default hyper-parameters (and the dataset's
number of steps), updated by the user's overrides; MAT reads the held-out logits of the
best-flip-rate seed-0 run of a phase-1 folder, as main.py's MAT does.
"""
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mat.memorization import (MemorizationResult, mean_by_group, random_halves,
                              summarise_by_group, train_on_halves)
from XRM.algorithms import get_algorithm_class
from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.data.catalog import dataset_key
from XRM.engine.batches import input_shape
from XRM.networks.classifiers import STACKED_FAMILIES, build_network
from XRM.runs.hparams import default_hparams
from XRM.runs.inputs import RunSetup, StackData, load_inputs, resolve_dataset
from XRM.runs.spec import RunSpec
from XRM.runs.sweep import select_phase_1_file

#: the algorithms a study compares (each model draws uniform batches from its own half)
STUDY_ALGORITHMS = ("ERM", "MAT")


@dataclass
class StudyInputs:
    """The training data (on the device) and each algorithm's checked inputs."""

    data: StackData
    setups: dict[str, RunSetup]


def load_study_inputs(dataset: str, data_path: str, algorithms: Sequence[str], phase_1_dir: str | None,
                      overrides: dict, inputs: str, device: torch.device, seed: int) -> StudyInputs:
    """Load and check everything before any training: a UserError names the first bad input."""
    dataset = dataset_key(dataset)  # a name in any case, or a custom dataset file (unknown: the registry says so)
    base = RunSpec(phase=2, dataset=dataset, algorithm=algorithms[0], hparams_comb=0, seed=seed, out_dir=".",
                   data_path=data_path, group_labels="no", inputs=inputs, device=str(device),
                   command_algorithms=tuple(algorithms))
    resolved = resolve_dataset(base)
    if resolved.family not in STACKED_FAMILIES:
        raise UserError(f"{dataset} trains a backbone on {resolved.inputs} here; memorisation scores train many "
                        "small models: pass --inputs features (a features.pt under --data_path)")
    family = resolved.family
    specs = []
    for algorithm in algorithms:
        phase_1_file = None
        if get_algorithm_class(algorithm).needs_held_out_logits:
            if phase_1_dir is None:
                raise UserError(f"{algorithm} trains on phase-1 held-out logits: pass --phase_1_dir (the XRM folder "
                                f"{command('train')} --phase 1 wrote, e.g. out/XRM), or leave it out with --algorithms ERM")
            phase_1_file = str(select_phase_1_file(phase_1_dir, dataset, 0))
        # the family's defaults for every drawn hyper-parameter, then the user's overrides
        wanted = {**default_hparams(family, algorithm), **overrides}
        specs.append(dataclasses.replace(base, algorithm=algorithm, phase_1_file=phase_1_file,
                                         hparams_overrides=wanted))
    data, setups = load_inputs(specs, device)
    half = len(data.splits["tr"]) // 2
    for setup in setups:
        if setup.hparams["batch_size"] > half:
            raise UserError(f"hyper-parameter batch_size = {setup.hparams['batch_size']} is larger than a half of the "
                            f"training set ({half} examples), which each model trains on; lower it with "
                            f"--hparams '{{\"batch_size\": {half}}}'")
    return StudyInputs(data, dict(zip(algorithms, setups)))


def run_study(study: StudyInputs, num_models: int, seed: int,
              on_step: Callable[[], None] = lambda: None) -> dict[str, MemorizationResult]:
    """Every algorithm's M models on the same complementary halves (drawn from ``seed``), scored."""
    train, data = study.data.splits["tr"], study.data
    halves = random_halves(len(train), num_models, seed)
    results = {}
    for algorithm, setup in study.setups.items():
        hparams = setup.hparams

        def networks() -> list[torch.nn.Module]:
            return [build_network(data.family, input_shape(train.x), data.num_classes, hparams, data.backbone)]

        results[algorithm] = train_on_halves(algorithm, train.x, train.y, halves, networks, hparams, seed,
                                             data.num_classes, setup.held_out_logits, on_step)
    return results


def study_summary(study: StudyInputs, results: dict[str, MemorizationResult]) -> dict[str, dict]:
    """memorization.json: per algorithm, the scores' ``per_group`` mean, median and count, the
    mean ``held_in_acc`` and ``held_out_acc`` per group, and the ``hparams`` it trained with."""
    y, a = study.data.splits["tr"].y.cpu(), study.data.splits["tr"].a.cpu()
    return {algorithm: {"per_group": summarise_by_group(result.scores, y, a),
                        "held_in_acc": mean_by_group(result.held_in_acc, y, a),
                        "held_out_acc": mean_by_group(result.held_out_acc, y, a),
                        "hparams": study.setups[algorithm].hparams}
            for algorithm, result in results.items()}


def study_scores(study: StudyInputs, results: dict[str, MemorizationResult]) -> dict:
    """scores.pt: every training example's score and accuracies per algorithm (float64 [n], example
    order), with the labels ``y`` and attributes ``a`` that define the groups."""
    train = study.data.splits["tr"]
    return {"scores": {name: result.scores for name, result in results.items()},
            "held_in_acc": {name: result.held_in_acc for name, result in results.items()},
            "held_out_acc": {name: result.held_out_acc for name, result in results.items()},
            "y": train.y.cpu(), "a": train.a.cpu()}
