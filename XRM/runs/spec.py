"""RunSpec: one run's identity and options (its training options declared once, in TrainingOptions).

A run is identified by (algorithm, dataset, group-label source, hyper-parameter
combination, seed): its files live under ``out_dir`` and are named by the last two, so a
relaunch finds the same files. Runs that share ``stack_key()`` may train together as one
stack (see XRM/runs/train.py).
"""
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from XRM.common.run_options import TrainingOptions
from XRM.results import records
from XRM.results.records import RunFiles
from XRM.runs.lock import held_elsewhere

#: fields a results header leaves out: the run's resolved hyper-parameters are recorded instead
NOT_IN_HEADER = ("hparams_overrides", "command_algorithms")


@dataclass(frozen=True, kw_only=True)
class RunSpec(TrainingOptions):
    """Everything one run needs to know: its identity and files here, how it trains in
    TrainingOptions (declared once, shared with sweeps and the command lines); picklable, so it
    travels to SLURM jobs as it is."""

    phase: int
    dataset: str  # a registered name, or the absolute path of a custom dataset file
    algorithm: str
    hparams_comb: int
    seed: int
    out_dir: str  # the run's folder: <out>/<ALGO>/<Dataset>/group_labels_<src>
    group_labels: str = "no"  # 'yes', 'no' or a phase-1 .pt file
    phase_1_file: str | None = None  # MAT's held-out logits
    base_model_file: str | None = None  # last-layer retraining's base: the selected AFRBase (AFR) or ERM (DFR) run's best model
    # the algorithms of the command that made the run: their own hyper-parameters in the overrides
    # are theirs, ignored here (XRM.runs.hparams.applicable_overrides); empty: the run's algorithm alone
    command_algorithms: tuple[str, ...] = ()

    @property
    def files(self) -> RunFiles:
        """The run's files."""
        return RunFiles(Path(self.out_dir), self.hparams_comb, self.seed)

    @property
    def run_name(self) -> str:
        """``<ALGO>/<Dataset>/group_labels_<src>/hpcomb_<k>_seed<s>``: short and unique in a sweep."""
        folder = Path(self.out_dir)
        return f"{self.algorithm}/{folder.parent.name}/{folder.name}/{self.files.tag}"

    @property
    def done_path(self) -> str:
        """The file that exists once the run has finished."""
        return str(self.files.done)

    def is_done(self) -> bool:
        """Whether the run has finished."""
        return self.files.done.exists()

    def progress(self) -> tuple[int, int] | None:
        """(the step of its last evaluation, its num_steps), from its results file (records.progress)."""
        return records.progress(self.files.results)

    def started(self) -> bool:
        """Whether the run has begun: its checkpoint or its results file exists."""
        return self.files.checkpoint.exists() or self.files.results.exists()

    def running_elsewhere(self) -> bool:
        """Whether another process is training the run now (it holds the run's lock)."""
        return held_elsewhere(self.files.lock)

    def header(self) -> dict[str, Any]:
        """The run's options as its results file's header records them (the reference's keys kept)."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in NOT_IN_HEADER}
        return {**options, "run_name": self.run_name, "done_path": self.done_path}

    def registering_modules(self) -> tuple[str, ...]:
        """The modules whose import registered this run's algorithm, its command's other algorithms
        (whose own hyper-parameters it sets aside) and its dataset (``mat`` registers MAT): a launched
        job's fresh interpreter imports them before it trains."""
        from XRM.algorithms import get_algorithm_class
        from XRM.data.registry import DATASETS

        modules = {get_algorithm_class(name).__module__ for name in (self.algorithm, *self.command_algorithms)}
        if self.dataset in DATASETS:
            modules.add(DATASETS[self.dataset].__module__)
        return tuple(sorted(module for module in modules if module != "__main__"))

    def data_key(self) -> tuple:
        """What decides the data a run trains on: runs with equal keys read the same inputs."""
        from XRM.algorithms import get_algorithm_class  # torch: only the engine's callers ask for keys

        return (self.dataset, self.data_path, self.phase, self.inputs, self.image_backbone, self.text_model,
                self.backbone_weights, get_algorithm_class(self.algorithm).data_view, self.base_model_file)

    def stack_key(self) -> tuple:
        """Runs with equal keys may share one stack: same data, device and precision."""
        return (*self.data_key(), self.device, self.dtype, self.quick_run, self.adam, self.stack_text_runs,
                tuple(sorted(self.hparams_overrides.items())))

    def trains_in_text_stack(self, family: str) -> bool:
        """Whether this run, on a dataset of network ``family``, trains in a TextStack with the other text runs
        of its stack (``--stack_text_runs``: BERT classifiers fine-tuned, one per run, or two trained together at
        every step, XRM's twins and LfF's networks; not the two-stage algorithms that freeze one network while the
        other trains, JTT, uLA, BAM)."""
        from XRM.algorithms import get_algorithm_class
        from XRM.algorithms.base import Algorithm
        from XRM.runs.last_layer_inputs import training_family

        cls = get_algorithm_class(self.algorithm)
        every_network_trains = cls.networks_per_run == 1 or (cls.networks_per_run == 2
                                                              and cls.network_updates is Algorithm.network_updates)
        return self.stack_text_runs and every_network_trains and training_family(cls, family) == "text"
