"""What last-layer retraining (DFR, AFR) trains on: the data splits it sees, its training
examples, and the base model it starts from.

- DFR (Kirichenko et al., 2023) trains on validation data: the validation set is cut into two
  fixed halves; a run trains on a group-balanced subset of the first (drawn from its seed) and
  is evaluated, and selected, on the second. Its inputs are standardised with the training
  split's mean and standard deviation, as the DFR authors standardise embeddings. DPE trains
  on the same halves of unstandardised inputs (it normalises each example itself).
- AFR (Qiu et al., 2023) trains on a fixed part of the training set (its reweighting part,
  20%) that its base model, ``AFRBase`` (ERM on the other 80%), never trained on. AFR reads
  the selected ``AFRBase`` run of the same --out_dir, dataset and group-label kind.

The "last layer" is a linear head. On a features dataset (a linear head on frozen features)
it is the whole trainable model and DFR needs no base run. On other datasets (ColorMNIST's
MLP, a fine-tuned ResNet or BERT) the base run's network, without its last layer, turns every
split into embeddings once (cached beside the base run's best model), and the head is trained
on them as on features; DFR's base is then the selected ERM run.
"""
import os
import sys
from pathlib import Path

import torch
from torch import nn

from XRM.algorithms.base import STANDARD_VIEW
from XRM.algorithms.last_layer import RAW_VALIDATION_HALVES_VIEW, VALIDATION_HALVES_VIEW, validation_halves
from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.common.fileio import atomic_torch_save
from XRM.data.base import SplitTensors
from XRM.engine.batches import evaluation_batches, input_shape
from XRM.engine.model_stacks import BACKBONE_EVALUATION_BATCH
from XRM.networks.backbones import BackboneSpec
from XRM.networks.classifiers import MLP, ImageClassifier, TextClassifier, build_network
from XRM.results import records
from XRM.results.collect import collect_runs
from XRM.results.selection import best_checkpoint_metric, best_hparams_comb

#: dataset families whose network is one linear head on the inputs (a features file, Synthetic)
LINEAR_HEAD_FAMILIES = ("features", "synthetic")


def _standardised(splits: dict[str, SplitTensors]) -> dict[str, SplitTensors]:
    x = splits["tr"].x
    mean, std = x.mean(dim=0), x.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {name: SplitTensors((split.x - mean) / std, split.y, split.a) for name, split in splits.items()}


def view_splits(view: str, splits: dict[str, SplitTensors]) -> dict[str, SplitTensors]:
    """The splits as an algorithm of ``view`` trains on them: 'tr', 'va', 'te' (see the module docstring)."""
    if view == STANDARD_VIEW:
        return splits
    if view not in (VALIDATION_HALVES_VIEW, RAW_VALIDATION_HALVES_VIEW):
        raise ValueError(f"unknown data view {view!r}")
    if view == VALIDATION_HALVES_VIEW:
        splits = _standardised(splits)
    validation = splits["va"]
    train_half, selection_half = validation_halves(len(validation))

    def part(ids: torch.Tensor) -> SplitTensors:
        ids = ids.to(validation.y.device)
        return SplitTensors(validation.x[ids], validation.y[ids], validation.a[ids])
    return {"tr": part(train_half), "va": part(selection_half), "te": splits["te"]}


def needs_base_model(algorithm_cls, family: str) -> bool:
    """Whether a run of ``algorithm_cls`` on a dataset of ``family`` reads a base run: AFR always
    (it starts from the base head), DFR where the base network makes the embeddings."""
    return algorithm_cls.base_algorithm is not None and (
        algorithm_cls.starts_from_base_head or family not in LINEAR_HEAD_FAMILIES)


def training_family(algorithm_cls, family: str) -> str:
    """The family whose hyper-parameters a run uses: a last-layer algorithm trains a head on
    features (embeddings) whatever the dataset's network; others train the dataset's family."""
    if algorithm_cls.base_algorithm is not None and family not in LINEAR_HEAD_FAMILIES:
        return "features"
    return family


def validation_half_attributes(validation_attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A validation attribute tensor cut into DFR's (training half, selection half)."""
    train_half, selection_half = validation_halves(len(validation_attributes))
    return validation_attributes[train_half], validation_attributes[selection_half]


# ---------------------------------------------------------------- base models (AFR's; DFR's embeddings)

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
    base_command = (f"{command('train')} --phase 2 --datasets {dataset} --algorithms {base_algorithm} "
                    f"--group_labels {group_labels} --num_hparams_combs 10 --out_dir {out_dir}")
    if not runs:
        raise UserError(f"{algorithm} retrains the last layer of a trained {base_algorithm} model, and {directory} has no "
                        f"finished {base_algorithm} run; run it first: {base_command}")
    if not any(run.seed == seed for run in runs):
        if not any(run.seed == 0 for run in runs):
            raise UserError(f"no finished {base_algorithm} run for seed {seed} or seed 0 in {directory}; run it first: "
                            f"{base_command} --seed {seed}")
        print(f"warning: no {base_algorithm} run for seed {seed} in {directory}; using seed 0's", file=sys.stderr)
        seed = 0
    metric = best_checkpoint_metric(records.group_labels_kind(group_labels) == "inferred")
    comb = best_hparams_comb([run for run in runs if run.seed == seed], metric, seed)
    return str(records.RunFiles(directory, comb, seed).best_checkpoint)


def _unreadable(path: str, exc: Exception) -> UserError:
    return UserError(f"base model {path} is unreadable or does not fit this dataset ({type(exc).__name__}); "
                     "delete its run and train it again")


def split_last_layer(network: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """``network`` with its last linear layer replaced by the identity (so it outputs embeddings), and that layer."""
    if isinstance(network, nn.Linear):
        return nn.Identity(), network
    if isinstance(network, MLP):
        head, network.layers[-1] = network.layers[-1], nn.Identity()
    elif isinstance(network, ImageClassifier):
        head, network.backbone.fc = network.backbone.fc, nn.Identity()
    elif isinstance(network, TextClassifier):
        head, network.head = network.head, nn.Identity()
    else:
        raise ValueError(f"no last layer known for {type(network).__name__}")
    return network, head


def load_base_network(path: str, data) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The base run's best network as an embedding network (without its last layer), and that last
    layer {'weight': [K, D], 'bias': [K]} (float64, checked); ``data`` is the stack's StackData."""
    backbone = None if data.backbone is None else BackboneSpec(data.backbone.name, pretrained=False)  # weights: the file's
    network = build_network(data.family, input_shape(data.splits["tr"].x), data.num_classes, None, backbone)
    try:
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    except Exception as exc:
        raise _unreadable(path, exc) from None
    extractor, head = split_last_layer(network)
    weight, bias = head.weight.detach().double(), head.bias.detach().double()
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise UserError(f"base model {path} holds non-finite weights; train its run again")
    return extractor, {"weight": weight, "bias": bias}


def _embeddings_file(base_model_file: str) -> Path:
    path = Path(base_model_file)
    return path.with_name(path.name.replace("best_", "embeddings_", 1))


@torch.inference_mode()
def _embed(extractor: nn.Module, inputs, device: torch.device, num_workers: int) -> torch.Tensor:
    extractor.to(device).eval()
    batches = evaluation_batches(inputs, BACKBONE_EVALUATION_BATCH, device, num_workers)
    return torch.cat([extractor(x).float().cpu() for x in batches])


def embedded_splits(extractor: nn.Module, base_model_file: str, splits: dict[str, SplitTensors],
                    device: torch.device, num_workers: int) -> dict[str, SplitTensors]:
    """Every split's embeddings by the base network (float32 [n, D], on the CPU), computed once and
    cached as ``embeddings_hpcomb_<k>_seed<s>.pt`` beside the base run's best model (recomputed
    when the best model is newer), so every run and every resume reads the same numbers."""
    cache = _embeddings_file(base_model_file)
    stamp = os.stat(base_model_file).st_mtime_ns
    saved = torch.load(cache, weights_only=True) if cache.exists() else None
    if saved is None or saved.get("base_mtime_ns") != stamp:
        saved = {"base_mtime_ns": stamp, **{name: _embed(extractor, split.x, device, num_workers)
                                           for name, split in splits.items()}}
        atomic_torch_save(saved, cache)
    return {name: SplitTensors(saved[name], split.y.cpu(), split.a.cpu()) for name, split in splits.items()}


def base_logits(head: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The base head's logits [n, K] on inputs ``x`` [n, D] (float64, on the CPU)."""
    return x.double().cpu() @ head["weight"].T + head["bias"]


def prepare_last_layer(algorithm_cls, data, setups: list, device: torch.device, dtype: torch.dtype,
                       embed: bool = True) -> None:
    """Turn a stack's loaded inputs (StackData ``data``, RunSetups ``setups``, every run of
    ``algorithm_cls`` and one base model file) into what a last-layer algorithm trains on: the
    base network's embeddings where the dataset's network is more than a head (not when ``embed``
    is False, for the up-front checks), AFR's base head and its logits on the training split, and
    DFR's validation halves."""
    base_model_file = setups[0].spec.base_model_file
    if needs_base_model(algorithm_cls, data.family):
        if base_model_file is None:
            raise UserError(f"{algorithm_cls.name} needs its {algorithm_cls.base_algorithm} base model; launch it "
                            f"through {command('train')}, which selects it")
        extractor, head = load_base_network(base_model_file, data)
        if data.family not in LINEAR_HEAD_FAMILIES:
            if not embed:
                return
            embedded = embedded_splits(extractor, base_model_file, data.splits, device, setups[0].spec.num_workers)
            data.splits = {name: SplitTensors(split.x.to(device, dtype), split.y.to(device), split.a.to(device))
                           for name, split in embedded.items()}
            data.family, data.inputs, data.backbone = "features", "embeddings", None
        if algorithm_cls.starts_from_base_head:
            logits = base_logits(head, data.splits["tr"].x)
            for setup in setups:
                setup.base_model, setup.held_out_logits = head, logits
    if algorithm_cls.data_view != STANDARD_VIEW:
        data.splits = view_splits(algorithm_cls.data_view, data.splits)
        for setup in setups:
            setup.train_attributes, setup.validation_groups = validation_half_attributes(setup.validation_groups)
            if setup.inferred_validation_attributes is not None:
                setup.inferred_validation_attributes = validation_half_attributes(
                    setup.inferred_validation_attributes)[1]
