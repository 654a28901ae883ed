"""The paper's Table 1 protocol as four stages over the sweep machinery (reproduce.py's library).

1. phase 1: XRM (or another group-inference algorithm: ``group_inference``, e.g. EIIL),
   ``num_hparams_combs`` combinations, seed 0 (phase 2 uses the best by its phase-1 metric: XRM's
   flip rate, EIIL's penalty);
2. phase 2: each algorithm's combinations, seed 0, in the group-label folder of each setting
   (XRM.results.table1_settings.source_kind; one sweep where both settings share a folder);
3. for each setting, the combination its criterion selects, for ``num_seeds`` seeds;
4. Table 1 (CSV, Markdown, LaTeX) and the plots.

Every stage launches its runs through the launchers of main.py, which skip finished runs and
resume interrupted ones, so running the protocol again continues where it stopped.
"""
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from XRM.common.commands import command
from XRM.launch.launchers import LaunchOptions, LaunchReport, format_report
from XRM.results import records
from XRM.results.table1 import Folders
from XRM.results.table1_settings import SELECTION_SETTINGS, source_kind

STAGES = 4
TABLES_FOLDER, PLOTS_FOLDER = ".", "plots"


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


def _phase_1_title(protocol: Protocol) -> str:
    return f"phase 1 ({protocol.group_inference})"


def _count(runs: list, refused: dict[str, str] | None = None) -> str:
    """A stage's runs: how many, done, refused (``refused``: run name -> the line refusing it; the first is
    shown) and left to run."""
    refused = refused or {}
    done = sum(run.is_done() and run.run_name not in refused for run in runs)
    counts = f"{len(runs)} runs, {done} done"
    if refused:
        counts += f", {len(refused)} refused (first: {next(iter(refused.values()))})"
    return f"{counts}, {len(runs) - done - len(refused)} to run"


def _checked_count(runs: list) -> str:
    """:func:`_count` with the runs launching would refuse (a finished run now asked for another run, ...)."""
    from XRM.runs.inputs import refused_runs

    return _count(runs, refused_runs(runs))


def _progress(number: int, title: str, detail: str) -> None:
    print(f"stage {number}/{STAGES} {title}: {detail}", flush=True)


def _launch(runs: list, stack_size: int | None, launcher: str, options: LaunchOptions) -> LaunchReport:
    from XRM.cli.sweep_options import check_and_launch

    report = check_and_launch(runs, stack_size, launcher, options)
    print("  " + format_report(report).replace("\n", "\n  "), flush=True)
    return report


def _sweeps_title(protocol: Protocol, algorithms: list[str] | None = None) -> str:
    """Stage 2's line for the sweeps of ``algorithms`` (default all trained)."""
    sweeps = ", ".join(f"{algorithm} on group_labels_{kind}" for algorithm, kind in protocol.sweeps(algorithms))
    return f"phase 2 sweeps ({sweeps})"


def _seeds_title(protocol: Protocol, wave: list[str] | None = None) -> str:
    """Stage 3's line, naming the wave's algorithms where the stage has several waves."""
    named = f" ({' '.join(wave)})" if wave is not None and len(protocol.waves()) > 1 else ""
    return f"{protocol.num_seeds} seeds of each setting's selected combination{named}"


def dry_run(protocol: Protocol) -> None:
    """Print the stages and their run counts (done, refused with the first reason, to run); run nothing
    (stages whose runs depend on earlier results that do not exist yet give the count they will have)."""
    from XRM.common.errors import UserError

    combs, seeds, datasets = protocol.num_hparams_combs, protocol.num_seeds, len(protocol.datasets)
    _progress(1, _phase_1_title(protocol), _checked_count(protocol.phase_1_runs()))
    try:
        _progress(2, _sweeps_title(protocol), _checked_count(protocol.sweep_runs()))
    except UserError:  # phase 1 has not run yet
        _progress(2, _sweeps_title(protocol), f"{len(protocol.sweeps()) * datasets * combs} runs after stage 1")
    try:
        _progress(3, _seeds_title(protocol), _checked_count(protocol.seed_runs()))
    except UserError:
        settings = len(protocol.trained_algorithms()) * len(SELECTION_SETTINGS) * datasets
        _progress(3, _seeds_title(protocol), f"at most {settings * seeds} runs "
                  f"after stage 2 ({settings} (dataset, algorithm, setting) cells x {seeds} seeds)")
    _progress(4, "tables and plots", f"{Path(protocol.out_dir) / 'table1'}.{{csv,md,tex}} and "
                                     f"{Path(protocol.out_dir) / PLOTS_FOLDER}/")


#: held by the reproduce.py running on an --out_dir: two protocols on one folder cannot interleave
PROTOCOL_LOCK = ".lock_reproduce"
#: the table files stage 4 writes into --out_dir
TABLE_SUFFIXES = (".csv", ".md", ".tex")


def status(protocol: Protocol, slurm_dir: str) -> str:
    """Where the protocol stands, from the files in --out_dir and the jobs indexed in ``slurm_dir``
    (XRM.launch.status, as main.py --status): whether a reproduce command is running on the folder, each
    stage's runs counted by state with a line for each running, pending, failed or stopped one, and whether the
    tables are written. A stage's runs are listed once the stages before it are done (phase 2 reads phase
    1's best run; the seeds, each setting's selected combination). Reads and writes nothing else."""
    from XRM.common.errors import UserError
    from XRM.launch.status import DONE, NOT_LAUNCHED, state_counts, state_lines, sweep_status
    from XRM.runs.lock import held_elsewhere

    out_dir = Path(protocol.out_dir)
    tables = [(out_dir / TABLES_FOLDER / "table1").with_suffix(suffix) for suffix in TABLE_SUFFIXES]
    written = all(path.exists() for path in tables)
    if held_elsewhere(out_dir / PROTOCOL_LOCK):
        lines = [f"a reproduce command is running on {out_dir}"]
    else:
        lines = [f"no reproduce command is running on {out_dir}"
                 + ("" if written else "; run the same command without --status to go on")]
    ready = True  # every run of the stages above is done
    for number, title, make_runs in _stages(protocol):
        runs = None
        if ready:
            try:
                runs = make_runs()
            except UserError:  # what the stage reads is not there yet
                pass
        if runs is None:
            lines.append(f"stage {number}/{STAGES} {title}: waits for the stages above")
            ready = False
            continue
        states = sweep_status(runs, slurm_dir)
        lines.append(f"stage {number}/{STAGES} {title}: {len(runs)} runs: {state_counts(states)}")
        lines += ["  " + line for line in state_lines([state for state in states
                                                        if state.state not in (DONE, NOT_LAUNCHED)])]
        ready = ready and all(state.state == DONE for state in states)
    tables_text = ", ".join(str(path) for path in tables) if written else "not written yet"
    lines.append(f"stage {STAGES}/{STAGES} tables and plots: {tables_text}")
    return "\n".join(lines)


def incomplete_cells(protocol: Protocol, cells: list) -> list[str]:
    """Why the table's cells do not hold the protocol asked for, one line each ([] when they do):
    every (setting, algorithm, dataset) needs its selected combination's ``num_seeds`` seeds
    (0 .. num_seeds - 1) finished, all trained on one phase-1 run and the same data."""
    by_key = {(cell.selection, cell.algorithm, cell.dataset): cell for cell in cells}
    problems = []
    for key, folder in protocol.folders().items():
        cell = by_key.get(key)
        if cell is None:
            problems.append(f"{folder}: no finished phase-2 run to select from")
            continue
        seeds = {run.seed for run in cell.summary.runs}
        missing = sorted(set(range(protocol.num_seeds)) - seeds)
        if missing:
            problems.append(f"{folder}: combination {cell.summary.best} has {len(seeds)} of the {protocol.num_seeds} "
                            f"seeds finished with records (missing: {', '.join(map(str, missing))})")
        inputs = {tuple(str(run.header.get("identity", {}).get(key)) for key in ("data", "group_labels_file",
                                                                              "phase_1_file"))
                  for run in cell.summary.runs}
        if len(inputs) > 1:
            problems.append(f"{folder}: the seeds of combination {cell.summary.best} trained on different data or "
                            "phase-1 runs")
    return problems


def run_protocol(protocol: Protocol, stack_size: int | None, launcher: str, options: LaunchOptions) -> int:
    """Stages 1 to 4 (each waits for its runs, on SLURM too) under the folder's protocol lock; 0, or 1
    when some run failed or the folders do not hold the whole protocol (then no table is written)."""
    from XRM.common.errors import UserError
    from XRM.runs.lock import try_lock, unlock

    handle = try_lock(Path(protocol.out_dir) / PROTOCOL_LOCK)
    if handle is None:
        raise UserError(f"another reproduce command is running on {protocol.out_dir}: wait for it to end, or give "
                        "another --out_dir")
    try:
        return _run_stages(protocol, stack_size, launcher, options)
    finally:
        unlock(handle)


def _stages(protocol: Protocol) -> list[tuple[int, str, Callable[[], list]]]:
    """Stages 1 to 3 in launch order, as (number, title, a function making their runs); stages 2 and 3
    come in waves (bases before dependents), whose runs can be made once the wave before has finished."""
    stages = [(1, _phase_1_title(protocol), protocol.phase_1_runs)]
    for make_stage_runs, make_title, number in ((protocol.sweep_runs, _sweeps_title, 2),
                                                (protocol.seed_runs, _seeds_title, 3)):
        for wave in protocol.waves():
            stages.append((number, make_title(protocol, wave), lambda make=make_stage_runs, wave=wave: make(wave)))
    return stages


def _run_stages(protocol: Protocol, stack_size: int | None, launcher: str, options: LaunchOptions) -> int:
    from XRM.common.errors import UserError
    from XRM.results.collect import collect_runs
    from XRM.results.plots import write_plots
    from XRM.results.table1 import table_cells, to_markdown, write_tables

    options = dataclasses.replace(options, wait=True)
    failed = []
    for number, title, make_runs in _stages(protocol):
        try:
            runs = make_runs()
        except UserError:
            if not failed:
                raise
            # what the stage reads is missing because runs above failed: say so, not how to run them by hand
            print(f"stage {number}/{STAGES} {title} cannot start: {len(failed)} runs above failed (listed above); "
                  "run the same command again to retry them", file=sys.stderr)
            return 1
        _progress(number, title, _count(runs))
        report = _launch(runs, stack_size, launcher, options)
        failed += report.failures or []
    cells = table_cells(protocol.folders())
    problems = incomplete_cells(protocol, cells)
    if problems:
        for problem in problems:
            print(f"incomplete: {problem}", file=sys.stderr)
        print(f"Table 1 not written: {len(problems)} cells do not hold the protocol asked for (above); "
              + ("run the same command again to retry the failed runs" if failed else
                 "delete the listed runs' done files, then run the same command again to train them"), file=sys.stderr)
        return 1
    out_dir = Path(protocol.out_dir)
    phase_1 = {label: collect_runs(protocol.phase_1_dir / label / records.group_labels_folder("no"))
               for label in protocol.labels()}
    paths = write_tables(cells, out_dir / TABLES_FOLDER) + write_plots(cells, phase_1, out_dir / PLOTS_FOLDER)
    _progress(4, "tables and plots", ", ".join(str(path) for path in paths))
    print("\n" + to_markdown(cells), flush=True)
    if failed:
        print(f"{len(failed)} runs failed (listed above); run the same command again to retry them", file=sys.stderr)
        return 1
    return 0
