"""What last-layer retraining (DFR, AFR) trains on: the data splits it sees, its training
examples, and the base model it starts from.

- DFR (Kirichenko et al., 2023) trains on validation data: the validation set is cut into two
  fixed halves; a run trains on a group-balanced subset of the first (drawn from its seed) and
  is evaluated, and selected, on the second. Its inputs are standardised with the training
  split's mean and standard deviation, as the DFR authors standardise embeddings.
- AFR (Qiu et al., 2023) trains on a fixed part of the training set (its reweighting part,
  20%) that its base model, ``AFRBase`` (ERM on the other 80%), never trained on. AFR reads
  the selected ``AFRBase`` run of the same --out_dir, dataset and group-label kind.

The "last layer" is a linear head on the stack's inputs: on a features dataset the inputs
are the frozen backbone's features, so the head is the whole trainable model.
"""
import sys
from pathlib import Path

import torch

from XRM import records
from XRM.data.base import SplitTensors
from XRM.errors import UserError
from XRM.model_selection import best_checkpoint_metric, best_hparams_comb
from XRM.results import collect_runs
from XRM.sampling import subsample_to_smallest_group

#: the usual splits: train on 'tr', select on 'va', report 'te'
STANDARD_VIEW = "standard"
#: DFR's splits: train on the first validation half, select on the second, report 'te'
VALIDATION_HALVES_VIEW = "validation_halves"
#: dataset families whose network is one linear head on the inputs (a features file, Synthetic)
LINEAR_HEAD_FAMILIES = ("features", "synthetic")
#: the fraction of the training set AFR reweights on, held out from its base model: the AFR
#: authors' README trains the base on 80% of the training data (train_prop=80) and the last layer
#: on the remaining 20% (train_prop=-20)
AFR_REWEIGHTING_FRACTION = 0.2
#: fixed seeds of the two cuts: every run, whatever its seed, sees the same halves and parts
_HALVES_SEED, _REWEIGHTING_SEED = 20230, 20231


def _fixed_permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def validation_halves(num_validation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DFR's two disjoint halves of the validation set (sorted example ids): the training half
    (floor(n / 2) examples) and the selection half (the rest). Fixed for a dataset."""
    order = _fixed_permutation(num_validation, _HALVES_SEED)
    half = num_validation // 2
    return order[:half].sort().values, order[half:].sort().values


def balanced_subset(groups: torch.Tensor, seed: int) -> torch.Tensor:
    """The examples (ids into ``groups``) DFR trains on: as many of every present group as the
    smallest group has, drawn from ``seed``."""
    return subsample_to_smallest_group(groups.cpu(), torch.Generator().manual_seed(seed))


def reweighting_part(num_train: int) -> torch.Tensor:
    """AFR's reweighting examples (sorted ids): a fixed 20% of the training set."""
    count = round(num_train * AFR_REWEIGHTING_FRACTION)
    return _fixed_permutation(num_train, _REWEIGHTING_SEED)[:count].sort().values


def base_model_part(num_train: int) -> torch.Tensor:
    """AFRBase's training examples: every training example outside AFR's reweighting part."""
    keep = torch.ones(num_train, dtype=torch.bool)
    keep[reweighting_part(num_train)] = False
    return keep.nonzero().flatten()


def _standardised(splits: dict[str, SplitTensors]) -> dict[str, SplitTensors]:
    x = splits["tr"].x
    mean, std = x.mean(dim=0), x.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {name: SplitTensors((split.x - mean) / std, split.y, split.a) for name, split in splits.items()}


def view_splits(view: str, splits: dict[str, SplitTensors]) -> dict[str, SplitTensors]:
    """The splits as an algorithm of ``view`` trains on them: 'tr', 'va', 'te' (see the module docstring)."""
    if view == STANDARD_VIEW:
        return splits
    if view != VALIDATION_HALVES_VIEW:
        raise ValueError(f"unknown data view {view!r}")
    splits = _standardised(splits)
    validation = splits["va"]
    train_half, selection_half = validation_halves(len(validation))
    def part(ids: torch.Tensor) -> SplitTensors:
        ids = ids.to(validation.y.device)
        return SplitTensors(validation.x[ids], validation.y[ids], validation.a[ids])
    return {"tr": part(train_half), "va": part(selection_half), "te": splits["te"]}


def check_linear_head(algorithm: str, family: str) -> None:
    """A UserError unless the dataset trains a linear head on its inputs (what DFR and AFR retrain)."""
    if family not in LINEAR_HEAD_FAMILIES:
        raise UserError(f"{algorithm} retrains a linear head on precomputed features; this dataset trains a "
                        f"{family} network: use --inputs features (retraining the last layer of ColorMNIST's MLP or "
                        "of a fine-tuned backbone is not supported yet)")


def validation_half_attributes(validation_attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A validation attribute tensor cut into DFR's (training half, selection half)."""
    train_half, selection_half = validation_halves(len(validation_attributes))
    return validation_attributes[train_half], validation_attributes[selection_half]


# ---------------------------------------------------------------------------------- AFR's base model

def base_runs_directory(out_dir: str | Path, base_algorithm: str, dataset_label: str, group_labels: str) -> Path:
    """``<out_dir>/<base>/<Dataset>/group_labels_<kind>``: where a run's base model is read from."""
    return records.run_directory(out_dir, base_algorithm, dataset_label, group_labels)


def select_base_model(algorithm: str, base_algorithm: str, out_dir: str | Path, dataset_label: str, dataset: str,
                      group_labels: str, seed: int) -> str:
    """The best model file of the base run that serves ``algorithm``'s seed ``seed``: among the
    finished base runs of that seed (seed 0's, with a warning, where it has none), the combination
    with the best va_wga (va_gi_wga for inferred groups), the criterion of its best checkpoint."""
    directory = base_runs_directory(out_dir, base_algorithm, dataset_label, group_labels)
    runs = [run for run in collect_runs(directory) if run.files.done.exists() and run.files.best_checkpoint.exists()]
    command = (f"python main.py --phase 2 --datasets {dataset} --algorithms {base_algorithm} --group_labels "
               f"{group_labels} --num_hparams_combs 10 --out_dir {out_dir}")
    if not runs:
        raise UserError(f"{algorithm} retrains the last layer of a {base_algorithm} model, and {directory} has no "
                        f"finished {base_algorithm} run; run it first: {command}")
    if not any(run.seed == seed for run in runs):
        if not any(run.seed == 0 for run in runs):
            raise UserError(f"no finished {base_algorithm} run for seed {seed} or seed 0 in {directory}; run it first: "
                            f"{command} --seed {seed}")
        print(f"warning: no {base_algorithm} run for seed {seed} in {directory}; using seed 0's", file=sys.stderr)
        seed = 0
    metric = best_checkpoint_metric(records.group_labels_kind(group_labels) == "inferred")
    comb = best_hparams_comb([run for run in runs if run.seed == seed], metric, seed)
    return str(records.RunFiles(directory, comb, seed).best_checkpoint)


def load_base_head(path: str, num_features: int, num_classes: int) -> dict[str, torch.Tensor]:
    """The linear head {'weight': [K, D], 'bias': [K]} of a base run's best model file, checked."""
    try:
        model = torch.load(path, map_location="cpu", weights_only=True)["model"]
        weight, bias = model["weight"].double(), model["bias"].double()
    except Exception as exc:
        raise UserError(f"base model {path} is unreadable ({type(exc).__name__}); delete its run and train it "
                        "again") from None
    if tuple(weight.shape) != (num_classes, num_features) or tuple(bias.shape) != (num_classes,):
        raise UserError(f"base model {path} is a head of shape {tuple(weight.shape)}, and this dataset needs "
                        f"({num_classes}, {num_features}); was it trained on another dataset?")
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise UserError(f"base model {path} holds non-finite weights; train its run again")
    return {"weight": weight, "bias": bias}


def base_logits(head: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The base head's logits [n, K] on inputs ``x`` [n, D] (float64, on the CPU)."""
    return x.double().cpu() @ head["weight"].T + head["bias"]
