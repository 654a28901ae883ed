"""The paper's Table 1 protocol as a plan of runs (XRM/cli/reproduction.py runs it in four stages): the phase-1
runs, each algorithm's phase-2 sweeps in the group-label folder of each model-selection setting
(XRM.results.table1_settings.source_kind; one sweep where both settings share a folder), and the seeds of the
combination each setting's criterion selects."""
import json
from dataclasses import dataclass, field
from pathlib import Path

from XRM.common.commands import command
from XRM.results import records
from XRM.results.table1 import Folders
from XRM.results.table1_settings import SELECTION_SETTINGS, source_kind


@dataclass
class Protocol:
    """What to reproduce, and the options every run shares (SweepSpec fields)."""

    datasets: list[str]
    algorithms: list[str]
    num_hparams_combs: int
    num_seeds: int
    out_dir: str
    true_groups: bool = False
    run_options: dict = field(default_factory=dict)  # SweepSpec fields: data_path, device, dtype, hparams_overrides, ...
    #: the phase-1 algorithm whose inferred groups build the "no group labels" setting (XRM: the paper's)
    group_inference: str = "XRM"

    @property
    def phase_1_dir(self) -> Path:
        """Where phase 1 writes: ``<out_dir>/<group_inference>`` (``<out_dir>/XRM`` by default)."""
        return Path(self.out_dir) / self.group_inference

    def check_group_inference(self) -> None:
        """A UserError unless ``group_inference`` is a phase-1 algorithm, or when ``out_dir`` holds a
        protocol built on another one (the phase-2 folders of the two would be the same)."""
        from XRM.algorithms import get_algorithm_class
        from XRM.common.errors import UserError

        if get_algorithm_class(self.group_inference).phase != 1:
            raise UserError(f"--group_inference {self.group_inference}: it is a phase-2 algorithm; give a phase-1 "
                            "algorithm (XRM or EIIL)")
        for other in Path(self.out_dir).glob("*/*/" + records.group_labels_folder("no")):
            name = other.parents[1].name
            if name != self.group_inference and _is_phase_1_folder(other):
                raise UserError(f"{self.out_dir} holds a protocol built on {name}'s groups ({other}); give "
                                f"another --out_dir for --group_inference {self.group_inference}")

    def labels(self) -> list[str]:
        """The names results are filed under, one per dataset."""
        from XRM.data.catalog import dataset_label

        return [dataset_label(name) for name in self.datasets]

    def trained_algorithms(self) -> list[str]:
        """--algorithms with each one's base algorithm (AFR's AFRBase, DFR's ERM: the model whose last
        layer it retrains) before it; bases train but get no table row unless asked for."""
        from XRM.algorithms import get_algorithm_class

        ordered: list[str] = []
        for algorithm in self.algorithms:
            base = get_algorithm_class(algorithm).base_algorithm
            ordered += [name for name in (base, algorithm) if name is not None and name not in ordered]
        return ordered

    def waves(self) -> list[list[str]]:
        """The trained algorithms in launch order: those that read no base run, then those that do
        (they select their base runs, so these must have finished)."""
        from XRM.algorithms import get_algorithm_class

        trained = self.trained_algorithms()
        dependent = [name for name in trained if get_algorithm_class(name).base_algorithm is not None]
        return [wave for wave in ([name for name in trained if name not in dependent], dependent) if wave]

    def sources(self) -> dict[tuple[str, str], str]:
        """(algorithm, setting) -> the group-label kind of its folder; a UserError for an unknown or
        phase-1 algorithm, one that accepts none of the kinds a setting needs, or one that needs
        held-out logits where the group inference writes none (MAT with EIIL)."""
        from XRM.algorithms import get_algorithm_class
        from XRM.common.errors import UserError

        inference = get_algorithm_class(self.group_inference)
        chosen = {}
        for algorithm in self.trained_algorithms():
            cls = get_algorithm_class(algorithm)
            if cls.phase != 2:
                raise UserError(f"{algorithm} is phase 1, which {command('reproduce')} runs itself; give phase-2 algorithms "
                                "in --algorithms")
            if cls.needs_held_out_logits and not inference.writes_held_out_logits:
                raise UserError(f"{algorithm} needs phase 1's held-out logits, which {self.group_inference} does not "
                                f"write; leave {algorithm} out of --algorithms, or use --group_inference XRM")
            for setting in SELECTION_SETTINGS:
                chosen[algorithm, setting] = source_kind(cls, setting, self.true_groups, self.one_folder(algorithm))
        return chosen

    def one_folder(self, algorithm: str) -> bool:
        """Whether ``algorithm``'s runs given true group labels also read phase 1's inferred validation groups
        (they record va_gi_wga), so that one sweep serves both settings, as MAT's does: it trains with no groups,
        reads no base run and is no trained algorithm's base (a base model is picked by its folder's own
        criterion), and no run of it in a ``group_labels_yes`` folder was started without a phase-1 file (by an
        earlier protocol, or main.py: that folder keeps its two sweeps, and its finished runs stay valid)."""
        return self._may_share_one_folder(algorithm) and False not in self._yes_runs_read_phase_1(algorithm)

    def _may_share_one_folder(self, algorithm: str) -> bool:
        """:meth:`one_folder`'s conditions on the algorithm and the protocol (not on its folders' runs)."""
        from XRM.algorithms import get_algorithm_class

        cls = get_algorithm_class(algorithm)
        if (cls.group_information != "none" or cls.needs_held_out_logits or cls.base_algorithm is not None
                or "yes" not in cls.accepted_group_labels):
            return False
        return not any(get_algorithm_class(other).base_algorithm == algorithm for other in self.trained_algorithms())

    def _yes_runs_read_phase_1(self, algorithm: str) -> set[bool]:
        """For the runs of ``algorithm`` in its ``group_labels_yes`` folders: whether each read a phase-1 file."""
        return {reads for label in self.labels()
                for reads in _reads_phase_1(records.run_directory(self.out_dir, algorithm, label, "yes"))}

    def gives_yes_runs_phase_1(self, algorithm: str) -> bool:
        """Whether ``algorithm``'s runs given true group labels read phase 1's inferred validation groups: where
        one sweep serves both settings (:meth:`one_folder`), and where such runs exist already (a protocol that
        now also trains a dependent of the algorithm, whose base runs are picked in each setting's folder, keeps
        the finished ones valid). The folders' headers are read once."""
        read = self._yes_runs_read_phase_1(algorithm)
        return True in read or (self._may_share_one_folder(algorithm) and False not in read)

    def group_labels(self, kind: str) -> str:
        """The --group_labels value of a kind: yes, no, or the phase-1 folder (its best run by flip rate)."""
        return str(self.phase_1_dir) if kind == "inferred" else kind

    def _spec(self, **fields):
        from XRM.runs.sweep import SweepSpec

        return SweepSpec(out_dir=self.out_dir, resume=True, phase_1_dir=str(self.phase_1_dir),
                         command_algorithms=[self.group_inference, *self.trained_algorithms()],
                         **self.run_options, **fields)

    def phase_1_runs(self) -> list:
        """Stage 1's runs."""
        from XRM.runs.sweep import make_runs

        return make_runs(self._spec(phase=1, datasets=self.datasets, algorithms=[self.group_inference], group_labels="no",
                                    num_hparams_combs=self.num_hparams_combs, seed=0))

    def sweeps(self, algorithms: list[str] | None = None) -> list[tuple[str, str]]:
        """The distinct (algorithm, kind) sweeps of stage 2 (of ``algorithms``, default all trained), in order."""
        return list(dict.fromkeys((algorithm, kind) for (algorithm, _), kind in self.sources().items()
                                  if algorithms is None or algorithm in algorithms))

    def sweep_runs(self, algorithms: list[str] | None = None) -> list:
        """Stage 2's runs of ``algorithms`` (default all trained; phase 1 must have finished: MAT and
        inferred groups read its best run, and a dependent algorithm's base runs must have too)."""
        from XRM.runs.sweep import make_runs

        runs = []
        for algorithm, kind in self.sweeps(algorithms):
            runs += make_runs(self._spec(phase=2, datasets=self.datasets, algorithms=[algorithm],
                                         group_labels=self.group_labels(kind), num_hparams_combs=self.num_hparams_combs,
                                         seed=0, inferred_validation_groups=self.gives_yes_runs_phase_1(algorithm)))
        return runs

    def folders(self, algorithms: list[str] | None = None) -> Folders:
        """(setting, algorithm, dataset label) -> the folder whose runs serve it, for ``algorithms``
        (default --algorithms, the table's rows)."""
        sources = self.sources()
        return {(setting, algorithm, label): records.run_directory(self.out_dir, algorithm, label,
                                                                   self.group_labels(sources[algorithm, setting]))
                for setting in SELECTION_SETTINGS for algorithm in (algorithms or self.algorithms)
                for label in self.labels()}

    def seed_runs(self, algorithms: list[str] | None = None) -> list:
        """Stage 3's runs of ``algorithms`` (default all trained): for each setting, the combination its
        criterion selects among a folder's seed-0 runs (XRM.results.selection), for every seed."""
        from XRM.common.errors import UserError
        from XRM.results.collect import collect_runs
        from XRM.results.selection import best_hparams_comb, criterion_for
        from XRM.runs.sweep import make_runs

        sources = self.sources()
        runs = []
        for (setting, algorithm, label), folder in self.folders(algorithms or self.trained_algorithms()).items():
            folder_runs = [run for run in collect_runs(folder) if run.seed == 0]
            if not folder_runs:
                raise UserError(f"no phase-2 runs in {folder} to select from; stage 2 runs them")
            best = best_hparams_comb(folder_runs, criterion_for(folder_runs, setting))
            dataset = self.datasets[self.labels().index(label)]
            runs += make_runs(self._spec(phase=2, datasets=[dataset], algorithms=[algorithm],
                                         group_labels=self.group_labels(sources[algorithm, setting]),
                                         hparams_comb=best, num_seeds=self.num_seeds,
                                         inferred_validation_groups=self.gives_yes_runs_phase_1(algorithm)))
        return list({run.run_name: run for run in runs}.values())  # two settings may select one combination


def _reads_phase_1(folder: Path) -> list[bool]:
    """For each run in ``folder`` with a readable results header: whether the header names a phase-1 file."""
    found = []
    for path in folder.glob("results_hpcomb_*_seed*.json"):
        with open(path, encoding="utf-8", errors="replace") as handle:
            first_line = handle.readline()
        try:
            header = json.loads(first_line)
        except ValueError:  # unreadable: the launch checks of its run say so
            continue
        if isinstance(header, dict):
            found.append(bool(header.get("phase_1_file")))
    return found


def _is_phase_1_folder(folder: Path) -> bool:
    """Whether ``folder``'s runs are phase 1."""
    from XRM.results.collect import collect_runs

    runs = collect_runs(folder)
    return bool(runs) and runs[0].phase == 1
