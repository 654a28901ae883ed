"""Turn a command line into the runs to launch, and group them into stacks (pure: reads results, trains nothing)."""
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from XRM.algorithms import PHASE_1_GROUP_LABELS, check_group_labels, get_algorithm_class
from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.common.run_options import TrainingOptions, shared_options
from XRM.data.catalog import dataset_key, dataset_label, get_dataset
from XRM.networks.classifiers import STACKED_FAMILIES
from XRM.results import records
from XRM.results.collect import collect_runs
from XRM.results.selection import best_hparams_comb, best_phase_1_comb
from XRM.runs.inputs import resolve_dataset
from XRM.runs.last_layer_inputs import needs_base_model, select_base_model, training_family
from XRM.runs.spec import RunSpec


@dataclass(frozen=True, kw_only=True)
class SweepSpec(TrainingOptions):
    """What to run: the reference code's main.py arguments (the runs' TrainingOptions, then which runs)."""

    phase: int
    datasets: list[str]
    algorithms: list[str]
    group_labels: str
    out_dir: str
    phase_1_dir: str | None = None
    hparams_comb: int | None = None
    num_hparams_combs: int | None = None
    best_hparams_comb_selection_metric: str | None = None
    seed: int | None = None
    num_seeds: int | None = None
    # every algorithm of the command when this sweep is one part of it (reproduce.py's stages);
    # None: ``algorithms``. Each run takes the overrides of its own space (RunSpec.command_algorithms).
    command_algorithms: list[str] | None = None
    # runs given true group labels also read phase 1's best file for its inferred validation groups, so that
    # they record va_gi_wga and their folder serves both of Table 1's settings (reproduce.py, for algorithms
    # that train with no groups: XRM.cli.protocol.Protocol.gives_yes_runs_phase_1)
    inferred_validation_groups: bool = False


def phase_1_runs_directory(phase_1_dir: str | Path, dataset: str) -> Path:
    """``<phase_1_dir>/<Dataset>/group_labels_no`` (``<phase_1_dir>`` may also be the out_dir holding XRM/)."""
    phase_1_dir = Path(phase_1_dir)
    if not (phase_1_dir / dataset).is_dir() and (phase_1_dir / "XRM" / dataset).is_dir():
        phase_1_dir = phase_1_dir / "XRM"
    return phase_1_dir / dataset / records.group_labels_folder(PHASE_1_GROUP_LABELS)


def select_phase_1_file(phase_1_dir: str | Path, dataset: str, seed: int) -> Path:
    """The phase-1 file of the best-flip-rate combination for ``seed`` (seed 0's, with a warning, if none)."""
    directory = phase_1_runs_directory(phase_1_dir, dataset_label(dataset))
    phase_1 = [run for run in collect_runs(directory) if run.phase == 1]
    runs = [run for run in phase_1 if run.files.inferred.is_file()]  # reference folders have no done files
    finished = [run for run in phase_1 if run.files.done.is_file()]
    if finished and not runs:
        raise UserError(
            f"the {len(finished)} phase-1 run(s) in {directory} wrote no phase-1 file: their inferred groups were "
            "degenerate (a class not split in two); run phase 1 with more --num_hparams_combs or steps, "
            "or give --group_labels yes")
    if not runs:  # the command names the dataset as --datasets takes it (a custom dataset: its file)
        raise UserError(
            f"no phase-1 results in {directory} (expected inferred_hpcomb_<k>_seed<s>.pt); run phase 1 first: "
            f"{command('train')} --phase 1 --datasets {dataset} --num_hparams_combs 10 --out_dir {directory.parents[2]}")
    if not any(run.seed == seed for run in runs):
        if not any(run.seed == 0 for run in runs):
            raise UserError(f"no phase-1 run for seed {seed} or seed 0 in {directory}; run phase 1 with --seed {seed}")
        print(f"warning: no phase-1 run for seed {seed} in {directory}; using seed 0's", file=sys.stderr)
        seed = 0
    comb = best_phase_1_comb(runs, seed)
    return records.RunFiles(directory, comb, seed).inferred


def _seeds(spec: SweepSpec) -> list[int]:
    if spec.num_seeds is not None:
        return list(range(spec.num_seeds))
    return [spec.seed if spec.seed is not None else 0]


def _hparams_combs(spec: SweepSpec, directory: Path) -> list[int]:
    if spec.best_hparams_comb_selection_metric is not None:
        runs = [run for run in collect_runs(directory) if run.files.done.exists()]
        if not runs:
            raise UserError(f"no finished runs in {directory} to select the best combination from; run the sweep "
                            "first with --num_hparams_combs N")
        return [best_hparams_comb(runs, spec.best_hparams_comb_selection_metric, seed=0)]
    if spec.num_hparams_combs is not None:
        return list(range(spec.num_hparams_combs))
    return [spec.hparams_comb if spec.hparams_comb is not None else 0]


def _group_label_source(spec: SweepSpec, dataset: str, seed: int) -> str:
    """'yes', 'no', a .pt file, or the best phase-1 file inside a phase-1 directory."""
    source = spec.group_labels
    if source in ("yes", "no"):
        return source
    path = Path(source)
    if path.is_dir():
        return str(select_phase_1_file(path, dataset, seed))
    if not path.is_file():
        raise UserError(f"--group_labels {source}: no such file or directory; give yes, no, a .pt file or a phase-1 folder")
    return str(path)


def make_runs(spec: SweepSpec) -> list[RunSpec]:
    """The runs of a sweep: datasets x algorithms x seeds x hyper-parameter combinations."""
    for dataset in spec.datasets:
        get_dataset(dataset)
    for algorithm in spec.algorithms:
        cls = get_algorithm_class(algorithm)
        if cls.phase != spec.phase:
            raise UserError(f"{algorithm} is a phase-{cls.phase} algorithm; it cannot run with --phase {spec.phase}")
        check_group_labels(cls, spec.group_labels)
    runs = []
    for name in spec.datasets:
        # a registered name as registered; a custom dataset file by absolute path, filed under its stem
        dataset, label = dataset_key(name), dataset_label(name)
        for algorithm in spec.algorithms:
            needs_phase_1 = get_algorithm_class(algorithm).needs_held_out_logits
            for seed in _seeds(spec):
                # the reference's rule: phase 1's seed-0 best run serves every seed (unless paired)
                phase_1_seed = seed if spec.pair_phase_1_seeds else 0
                group_labels = _group_label_source(spec, dataset, phase_1_seed)
                directory = records.run_directory(spec.out_dir, algorithm, label, group_labels)
                phase_1_file = None
                if needs_phase_1 or (spec.inferred_validation_groups and group_labels == "yes"):
                    phase_1_dir = spec.phase_1_dir or str(Path(spec.out_dir) / "XRM")
                    phase_1_file = str(select_phase_1_file(phase_1_dir, dataset, phase_1_seed))
                for comb in _hparams_combs(spec, directory):
                    runs.append(RunSpec(
                        phase=spec.phase, dataset=dataset, algorithm=algorithm, hparams_comb=comb, seed=seed,
                        out_dir=str(directory), group_labels=group_labels, phase_1_file=phase_1_file,
                        command_algorithms=tuple(spec.command_algorithms or spec.algorithms), **shared_options(spec)))
    return _with_base_models(runs, spec.out_dir)


def _with_base_models(runs: list[RunSpec], out_dir: str) -> list[RunSpec]:
    """The runs, those of last-layer algorithms with the base model they read (XRM.runs.last_layer_inputs)."""
    chosen: dict[tuple, str] = {}
    completed = []
    for run in runs:
        cls = get_algorithm_class(run.algorithm)
        if cls.base_algorithm is not None and needs_base_model(cls, resolve_dataset(run).family):
            label = Path(run.out_dir).parent.name
            key = (run.algorithm, run.dataset, run.group_labels, run.seed)
            if key not in chosen:
                chosen[key] = select_base_model(run.algorithm, cls.base_algorithm, out_dir, label, run.dataset,
                                                run.group_labels, run.seed)
            run = dataclasses.replace(run, base_model_file=chosen[key])
        completed.append(run)
    return completed


def plan_stacks(runs: list[RunSpec], stack_size: int | None = None) -> list[list[RunSpec]]:
    """The runs grouped into stacks: runs that share data, device and precision and train a
    small model go together (at most ``stack_size`` per stack), and so do text runs with
    ``--stack_text_runs`` (RunSpec.trains_in_text_stack); other backbones' runs go alone.

    The engine splits a stack further where it does not fit the device's memory.
    """
    groups: dict[tuple, list[RunSpec]] = {}
    families: dict[tuple, str] = {}
    for run in runs:
        key = run.stack_key()
        if key not in families:
            families[key] = resolve_dataset(run).family
        groups.setdefault(key, []).append(run)
    stacks = []
    for key, group in groups.items():
        family = families[key]
        together, alone = [], []
        for run in group:
            stacked = (training_family(get_algorithm_class(run.algorithm), family) in STACKED_FAMILIES
                       or run.trains_in_text_stack(family))
            (together if stacked else alone).append(run)
        size = stack_size or max(len(together), 1)
        stacks += [together[i : i + size] for i in range(0, len(together), size)]
        stacks += [[run] for run in alone]
    return stacks
