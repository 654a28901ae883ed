"""A run's inputs, loaded and checked: the data its stack shares, and what is its own.

Every input is checked here, before anything is written: a bad one raises a UserError.
"""
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from XRM.algorithms import RunData, check_group_labels, get_algorithm_class
from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.common.groups import group_ids
from XRM.data.base import GroupDataset, InputOptions, SplitTensors
from XRM.data.catalog import get_dataset
from XRM.engine.batches import input_shape
from XRM.networks.backbones import BackboneSpec
from XRM.networks.classifiers import build_network
from XRM.results import records
from XRM.runs.checkpoints import load_checkpoint
from XRM.runs.hparams import applicable_overrides, check_hparams, default_hparams, random_hparams
from XRM.runs.last_layer_inputs import prepare_last_layer, training_family
from XRM.runs.identity import IDENTITY, fingerprint_splits, identity_differences, run_identity
from XRM.runs.phase_1_files import HELD_OUT_LOGITS, TRAIN_ATTRIBUTES, VALIDATION_ATTRIBUTES, load_phase_1_artifact
from XRM.runs.spec import RunSpec

#: steps of a --quick_run (debugging: default hyper-parameters, short)
QUICK_RUN_STEPS = 201


def input_options(spec: RunSpec) -> InputOptions:
    """The run's choices of inputs and backbone."""
    return InputOptions.from_run_args({"inputs": spec.inputs, "image_backbone": spec.image_backbone,
                                       "text_model": spec.text_model, "backbone_weights": spec.backbone_weights})


def resolve_dataset(spec: RunSpec) -> GroupDataset:
    """The dataset as the run's phase trains on it (features or images, which backbone)."""
    phase = get_algorithm_class(spec.algorithm).phase
    return get_dataset(spec.dataset).resolve(spec.data_path, phase, input_options(spec))


@dataclass
class StackData:
    """The data every run of a stack shares, loaded once; split tensors on the stack's device."""

    splits: dict[str, SplitTensors]
    num_classes: int
    family: str
    inputs: str
    num_steps: int
    eval_every: int
    backbone: BackboneSpec | None = None
    balanced_batches: bool = False
    fingerprint: str = ""  # of the data as loaded (XRM.runs.identity.fingerprint_splits)
    label_names: tuple[str, ...] = ()  # what each label and attribute value means, where the dataset knows
    attribute_names: tuple[str, ...] = ()

    def test_groups(self) -> dict[str, dict]:
        """Every test group as the records number it (``y * n_attr + a``): its label, attribute, size and,
        where the dataset knows, what they mean; for the header (plots name the groups with it)."""
        test = self.splits["te"]
        groups = group_ids(test.y, test.a).cpu()
        table = {}
        for group, y, a in sorted({(int(g), int(y), int(a)) for g, y, a in zip(groups, test.y.cpu(), test.a.cpu())}):
            named = {"label": self.label_names[y]} if y < len(self.label_names) else {}
            named.update({"attribute": self.attribute_names[a]} if a < len(self.attribute_names) else {})
            table[str(group)] = {"y": y, "a": a, "n": int((groups == group).sum()), **named}
        return table

    @property
    def small_model(self) -> bool:
        """Whether the runs train a small model (a head or an MLP on tensors) that stacks."""
        return self.backbone is None and isinstance(self.splits["tr"].x, torch.Tensor)


def _in_precision(split: SplitTensors, dtype: torch.dtype) -> SplitTensors:
    """The split with floating-point tensor inputs in ``dtype`` (tokens and Datasets unchanged)."""
    if isinstance(split.x, torch.Tensor) and split.x.is_floating_point():
        return SplitTensors(split.x.to(dtype), split.y, split.a)
    return split


def load_stack_data(spec: RunSpec, device: torch.device, dtype: torch.dtype = torch.float32) -> StackData:
    """Load (once for a stack) the dataset a run trains on; float inputs in ``dtype``."""
    dataset = resolve_dataset(spec)
    splits = dataset.load_splits(spec.data_path)
    return StackData(splits={name: _in_precision(split.to(device), dtype) for name, split in splits.items()},
                     num_classes=dataset.num_classes, family=dataset.family, inputs=dataset.inputs,
                     num_steps=dataset.num_steps, eval_every=dataset.eval_every, backbone=dataset.backbone,
                     balanced_batches=dataset.balanced_batches, fingerprint=fingerprint_splits(splits),
                     label_names=dataset.label_names, attribute_names=dataset.attribute_names)


def resolve_hparams(spec: RunSpec, family: str, num_steps: int, eval_every: int) -> dict[str, Any]:
    """The run's hyper-parameters: a random draw (or defaults for --quick_run), then the overrides
    of its space (those of another algorithm of its command are that algorithm's)."""
    family = training_family(get_algorithm_class(spec.algorithm), family)
    hparams = (default_hparams(family, spec.algorithm) if spec.quick_run
               else random_hparams(family, spec.algorithm, spec.hparams_comb))
    if spec.adam:
        hparams["optimizer"] = "adam"
    hparams["num_steps"] = min(num_steps, QUICK_RUN_STEPS) if spec.quick_run else num_steps
    hparams["eval_every"] = eval_every
    hparams.update(applicable_overrides(spec.hparams_overrides, hparams, spec.command_algorithms or (spec.algorithm,)))
    check_hparams(hparams)
    return hparams


@dataclass
class RunSetup:
    """One run's own inputs, on the CPU: hyper-parameters, group labels, phase-1 outputs."""

    spec: RunSpec
    hparams: dict[str, Any]
    train_attributes: torch.Tensor  # [n_tr]
    validation_groups: torch.Tensor  # [n_va]: the --group_labels source's validation attributes (va_wga)
    inferred_validation_attributes: torch.Tensor | None  # [n_va], from a phase-1 file (va_gi_wga)
    held_out_logits: torch.Tensor | None  # [n_tr, K], MAT's (AFR: its base head's logits)
    base_model: dict[str, torch.Tensor] | None = None  # AFR: its base model's last layer, where it starts from
    identity: dict[str, Any] | None = None  # XRM.runs.identity.run_identity: what its files must record

    def run_data(self, y: torch.Tensor, num_classes: int) -> RunData:
        """What the run's algorithm may know about the training set."""
        return RunData.from_labels(y.cpu(), self.train_attributes, num_classes, self.spec.seed, self.hparams,
                                   self.held_out_logits, self.base_model)


class Phase1Files:
    """Phase-1 files and group-label sources read once per stack (many runs share one), checked
    against the data."""

    def __init__(self, data: StackData) -> None:
        self.data = data
        self._loaded: dict[str, dict[str, torch.Tensor]] = {}
        self._sources: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, path: str) -> dict[str, torch.Tensor]:
        """The checked contents of the phase-1 file ``path``."""
        if path not in self._loaded:
            self._loaded[path] = load_phase_1_artifact(Path(path), self.data.splits["tr"].y,
                                                       self.data.splits["va"].y, self.data.num_classes)
        return self._loaded[path]

    def group_labels(self, source: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The training and validation attributes of a --group_labels source, on the CPU, one tensor
        per source (runs that share a source share them): 'yes' the true ones, 'no' zeros (the
        groups are then the classes), a phase-1 file its inferred ones."""
        if source not in self._sources:
            train, validation = self.data.splits["tr"], self.data.splits["va"]
            if source == "yes":
                self._sources[source] = (train.a.cpu(), validation.a.cpu())
            elif source == "no":
                self._sources[source] = (torch.zeros_like(train.y.cpu()), torch.zeros_like(validation.y.cpu()))
            else:
                labels = self(source)
                self._sources[source] = (labels[TRAIN_ATTRIBUTES], labels[VALIDATION_ATTRIBUTES])
        return self._sources[source]


def load_run_setup(spec: RunSpec, data: StackData, phase_1_files: Phase1Files) -> RunSetup:
    """Load and check the run's own inputs; raises UserError on bad input."""
    algorithm_cls = get_algorithm_class(spec.algorithm)
    check_group_labels(algorithm_cls, spec.group_labels)
    train_y = data.splits["tr"].y.cpu()
    inferred_validation = None
    train_attributes, validation_groups = phase_1_files.group_labels(spec.group_labels)
    if spec.group_labels not in ("yes", "no"):
        inferred_validation = validation_groups
    held_out = None
    if algorithm_cls.needs_held_out_logits:
        if not spec.phase_1_file:
            raise UserError(f"{algorithm_cls.name} needs phase-1 outputs; run phase 1 first: "
                            f"{command('train')} --phase 1 ...")
        outputs = phase_1_files(spec.phase_1_file)
        if HELD_OUT_LOGITS not in outputs:
            raise UserError(f"{spec.phase_1_file} has no held-out logits ('{HELD_OUT_LOGITS}' is absent or None, as "
                            "in files of the XRM repository's main.py and of EIIL, which trains no held-out model); MAT "
                            "needs them: re-run phase 1 with XRM in this toolkit (GroupDRO and the other baselines can "
                            "still use the file's groups)")
        held_out, inferred_validation = outputs[HELD_OUT_LOGITS], outputs[VALIDATION_ATTRIBUTES]
    elif spec.phase_1_file:  # true group labels, and phase 1's inferred validation groups for va_gi_wga
        inferred_validation = phase_1_files(spec.phase_1_file)[VALIDATION_ATTRIBUTES]
    hparams = resolve_hparams(spec, data.family, data.num_steps, data.eval_every)
    if hparams["batch_size"] > len(train_y):
        raise UserError(f"hyper-parameter batch_size = {hparams['batch_size']} is larger than the training set "
                        f"({len(train_y)} examples); lower it with --hparams '{{\"batch_size\": {len(train_y)}}}'")
    setup = RunSetup(spec, hparams, train_attributes, validation_groups, inferred_validation, held_out,
                     identity=run_identity(spec, data.fingerprint, hparams))
    check_run_files(setup)
    return setup


def reuses_files(spec: RunSpec) -> bool:
    """Whether launching the run would reuse files: it finished (skipped as done), or resumes."""
    return spec.is_done() or (spec.resume and spec.files.checkpoint.exists())


def check_run_files(setup: RunSetup) -> None:
    """A UserError when the files a run would reuse (the results of a finished run, or a checkpoint
    and records to resume from) were written by another run: another seed, data, precision,
    phase-1 file or hyper-parameters. Files of older versions, which record no identity, are
    compared by their hyper-parameters."""
    spec = setup.spec
    if not reuses_files(spec) or not spec.files.results.exists():
        return
    try:
        header, _ = records.read_results(spec.files.results)
    except (OSError, ValueError):
        return  # an unreadable results file is read_results' to report
    if not header:
        return  # records without their header: training restarts the run (XRM.runs.members.records_problem)
    recorded = header.get(IDENTITY) or {"hparams": header.get("hparams")}
    if isinstance(recorded, dict):
        refuse_other_run(spec, "its results", identity_differences(recorded, setup.identity))


def refuse_other_run(spec: RunSpec, what: str, differences: list[str]) -> None:
    """The one line that says a run's ``what`` belong to another run, and what to do."""
    if differences:
        state = "finished" if spec.is_done() else "was started"
        raise UserError(f"{spec.run_name} {state} as another run: {what} record {'; '.join(differences)}; use "
                        f"another --out_dir, or delete its files in {spec.files.directory} to train this one")


def load_inputs(specs: Sequence[RunSpec], device: torch.device, dtype: torch.dtype = torch.float32,
                embed: bool = True) -> tuple[StackData, list[RunSetup]]:
    """The data ``specs`` share (loaded once, on ``device``) and each run's own inputs, all checked
    (``embed``: compute a last-layer algorithm's embeddings; the up-front checks do not)."""
    data = load_stack_data(specs[0], device, dtype)
    phase_1_files = Phase1Files(data)
    setups = [load_run_setup(spec, data, phase_1_files) for spec in specs]
    # one algorithm data view and base model per stack: both are part of RunSpec.data_key
    prepare_last_layer(get_algorithm_class(specs[0].algorithm), data, setups, device, dtype, embed)
    return data, setups


def _by_data(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """``specs`` in groups that read the same data (loaded once per group)."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.data_key(), []).append(spec)
    return list(groups.values())


def check_runs(specs: Sequence[RunSpec]) -> None:
    """Load and check the inputs of every run before any run writes a file (raises the first UserError)."""
    for group in _by_data(specs):
        data, setups = load_inputs(group, torch.device("cpu"), embed=False)
        for setup in setups:  # a checkpoint to resume from must be readable and of the same settings
            if setup.spec.resume and setup.spec.files.checkpoint.exists():
                load_checkpoint(setup.spec, setup.identity)
        if data.backbone is not None:  # missing pretrained weights surface now, not mid-sweep
            build_network(data.family, input_shape(data.splits["tr"].x), data.num_classes, setups[0].hparams,
                          data.backbone)


def refused_runs(specs: Sequence[RunSpec]) -> dict[str, str]:
    """Run name -> the one line that refuses it, for the runs of ``specs`` that reuse files (finished or
    resumed) and would be refused: their files belong to another run (other data, precision, phase-1
    file or hyper-parameters), or their inputs cannot be read."""
    refused = {}
    for group in _by_data([spec for spec in specs if reuses_files(spec)]):
        try:
            data = load_stack_data(group[0], torch.device("cpu"))
        except UserError as error:
            refused.update({spec.run_name: str(error) for spec in group})
            continue
        phase_1_files = Phase1Files(data)
        for spec in group:
            try:
                load_run_setup(spec, data, phase_1_files)  # checks the run's files (check_run_files)
            except UserError as error:
                refused[spec.run_name] = str(error)
    return refused


def check_finished(specs: Sequence[RunSpec]) -> None:
    """A UserError when a finished run would now be asked for another run (other data, precision,
    phase-1 file or hyper-parameters): it would be skipped as done, and the new one never train."""
    refused = refused_runs([spec for spec in specs if spec.is_done()])
    if refused:
        raise UserError(next(iter(refused.values())))
