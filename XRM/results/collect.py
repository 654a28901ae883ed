"""Reading a folder of runs, selecting hyper-parameters, and formatting result tables. Never trains."""
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from XRM.results import records
from XRM.results.selection import (best_hparams_comb, check_metric, is_phase_1, runs_phase_1_metric, selectable,
                                   selected_record, selection_seed)


@dataclass
class RunResult:
    """The records of one run found on disk."""

    hparams_comb: int
    seed: int
    header: dict
    records: list[dict]
    files: records.RunFiles

    @property
    def phase(self) -> int:
        """1 or 2, from the records."""
        return 1 if is_phase_1(self.records) else 2

    @property
    def problem(self) -> str | None:
        """Why the run must not be selected, or None: its records repeat steps (two processes
        trained it), have no header line, or were written by this toolkit (the header names a
        done file) for a run that has not finished (unfinished, failed, diverged or still running)."""
        steps = [record[records.STEP] for record in self.records]
        if len(set(steps)) != len(steps):
            return "its records repeat steps"
        if not self.header:
            return f"its records have no header line (the run's hyper-parameters); {start_over(self.files)}"
        other = self.foreign_identity()
        if other:
            return f"its header names another run ({other}): copied from elsewhere?"
        if "done_path" in self.header and not self.files.done.exists():
            return "no done file: unfinished, failed or still running"
        return None


    def foreign_identity(self) -> str:
        """What the identity its header records (XRM.runs.identity) says that contradicts where its
        file lies (combination and seed in the name, algorithm and dataset in the folders); '' if nothing."""
        identity = self.header.get("identity")
        if not isinstance(identity, dict):
            return ""
        directory = self.files.directory
        where: dict = {"hparams_comb": self.hparams_comb, "seed": self.seed}
        if directory.name.startswith("group_labels_"):  # the <ALGO>/<Dataset>/group_labels_<kind> layout
            where.update(algorithm=directory.parent.parent.name, dataset=directory.parent.name)
        return ", ".join(f"{key} {identity[key]!r}, not {value!r}" for key, value in where.items()
                         if key in identity and identity[key] != value)


def folder_names(root: Path, wanted: list[str] | None) -> list[str]:
    """The names of the folders in ``root`` (algorithms, datasets), sorted; those of ``wanted`` if given,
    each as the folder it names in any case is spelled (a name that names none as given)."""
    found = sorted(path.name for path in root.iterdir() if path.is_dir()) if root.is_dir() else []
    if not wanted:
        return found
    spelled = {name.casefold(): name for name in found}
    return [name if name in found else spelled.get(name.casefold(), name) for name in wanted]


def collect_runs(directory: Path) -> list[RunResult]:
    """Every readable run in ``directory``; an unreadable results file is named and skipped."""
    found = []
    for path in sorted(directory.glob("results_hpcomb_*_seed*.json")):
        match = records.RESULTS_PATTERN.search(path.name)
        if not match:
            continue
        try:
            header, run_records = records.read_results(path)
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", file=sys.stderr)
            continue
        if run_records:
            comb, seed = int(match.group(1)), int(match.group(2))
            found.append(RunResult(comb, seed, header, run_records, records.RunFiles(directory, comb, seed)))
    return found


def start_over(files: records.RunFiles) -> str:
    """The advice that repairs a run whose files cannot be trusted: delete them, train it again."""
    return f"delete its files ({files.removal_command()}) and run it again"


@dataclass(frozen=True)
class BrokenRun:
    """A run whose files disagree and hold no record: never selected; ``problem`` says why and what repairs it."""

    files: records.RunFiles
    problem: str


def broken_runs(directory: Path, runs: list[RunResult]) -> list[BrokenRun]:
    """The runs of ``directory`` missing from ``runs`` (collect_runs' answer: the runs with records)
    whose files disagree: a done file without a results file or without records, or a checkpoint
    beside a missing or empty results file."""
    read = {run.files.tag for run in runs}
    found = []
    for files in records.run_files_in(directory):
        problem = None if files.tag in read else _disagreement(files)
        if problem is not None:
            found.append(BrokenRun(files, problem))
    return found


def _disagreement(files: records.RunFiles) -> str | None:
    """Why the files of a run without records disagree, and what repairs them; None when they agree
    (a run that has not evaluated yet) or its results file is unreadable (collect_runs names it)."""
    header: dict = {}
    if files.results.exists():
        try:
            header, run_records = records.read_results(files.results)
        except (OSError, ValueError):
            return None
        if run_records:
            return None
    results = "no results file" if not files.results.exists() else "no records" if header else "an empty results file"
    if files.done.exists():
        return f"it has a done file but {results}; {start_over(files)}"
    if files.checkpoint.exists() and not header:
        return f"it has a checkpoint but {results}; run it again with --resume, which restarts it from step 0"
    return None


def not_selected(runs: list[RunResult], broken: list[BrokenRun]) -> list[str]:
    """The lines that list the runs that may not be selected and why (none when every run may be)."""
    flagged = [(run.seed, run.hparams_comb, run.files.tag, run.problem) for run in runs if not selectable(run)]
    flagged += [(run.files.seed, run.files.hparams_comb, run.files.tag, run.problem) for run in broken]
    if not flagged:
        return []
    return [f"not selected ({len(flagged)}):"] + [f"  {tag}: {problem}" for _, _, tag, problem in sorted(flagged)]


def _format(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


@dataclass
class Summary:
    """The best combination of a folder by a metric and its seeds: what the tables report."""

    metric: str
    best: int  # the selected hyper-parameter combination
    seed: int  # the seed whose runs chose it
    runs: list[RunResult]  # its selectable runs, one per seed
    stats: dict[str, tuple[float, float]]  # column -> (mean, population std) over the runs, in percent

    @property
    def selected_run(self) -> RunResult:
        """The run of the selection seed (the run whose curve and groups the plots show)."""
        return next((run for run in self.runs if run.seed == self.seed), self.runs[0])


def summarize(runs: list[RunResult], metric: str, seed: int = 0) -> Summary:
    """The best combination by ``metric`` (chosen by ``seed``'s runs) and the mean and population std
    over its selectable seeds, as the reference prints them, of the test worst-group and average
    accuracy (phase 1: the flip rate), each run read at its selected step."""
    check_metric(runs, metric)
    best = best_hparams_comb(runs, metric, seed)
    best_runs = sorted((run for run in runs if run.hparams_comb == best and selectable(run)), key=lambda r: r.seed)
    columns = [runs_phase_1_metric(runs)] if runs[0].phase == 1 else [records.TE_WGA, records.TE_AVG_ACC]
    stats = {}
    for column in columns:
        values = [selected_record(run.records, metric).get(column) for run in best_runs]
        values = [100 * v for v in values if v is not None]
        stats[column] = (statistics.mean(values), statistics.pstdev(values))  # pstdev: numpy's default, as the reference
    return Summary(metric, best, selection_seed(runs, seed), best_runs, stats)


def provenance_line(run: RunResult) -> str:
    """Where and with what ``run`` trained, from its header ('' for runs that record no provenance)."""
    provenance = run.header.get("provenance")
    if not isinstance(provenance, dict):
        return ""
    commit = provenance.get("commit")
    return (f"trained on {provenance.get('device_used')} with torch {provenance.get('torch')}, toolkit "
            f"{provenance.get('toolkit')}" + (f", commit {commit[:12]}" if commit else "")
            + f", {provenance.get('host')}, started {provenance.get('started')} ({run.files.tag})")


def format_table(runs: list[RunResult], metric: str, seed: int = 0, broken: list[BrokenRun] | None = None) -> str:
    """One row per hyper-parameter combination (best marked '*'), then mean +/- std over seeds of the best,
    then the runs that were not selected and why (unfinished, records repeating steps, ``broken`` runs)."""
    summary = summarize(runs, metric, seed)
    columns = [runs_phase_1_metric(runs)] if runs[0].phase == 1 else list(records.PHASE_2_METRICS)
    lines = [f"  {'hpcomb':>7} {'step':>6} " + " ".join(f"{c:>10}" for c in columns)]
    for run in sorted(runs, key=lambda r: r.hparams_comb):
        if run.seed != summary.seed:
            continue
        record = selected_record(run.records, metric) or {}
        mark = "*" if run.hparams_comb == summary.best else " "
        lines.append(f"{mark} {run.hparams_comb:>7} {record.get(records.STEP, '-'):>6} "
                     + " ".join(f"{_format(record.get(c)):>10}" for c in columns))
    parts = [f"{column} {mean:.1f} +/- {spread:.1f}" for column, (mean, spread) in summary.stats.items()]
    lines.append(f"best hpcomb {summary.best} by {metric} (seed {summary.seed}); over {len(summary.runs)} seed(s): "
                 + ", ".join(parts))
    trained = provenance_line(summary.selected_run)
    if trained:
        lines.append(trained)
    return "\n".join(lines + not_selected(runs, broken or []))
