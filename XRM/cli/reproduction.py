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
import sys
from collections.abc import Callable
from pathlib import Path

from XRM.cli.protocol import Protocol
from XRM.launch.launchers import LaunchOptions, LaunchReport, format_report
from XRM.results import records
from XRM.results.table1_settings import SELECTION_SETTINGS

STAGES = 4
TABLES_FOLDER, PLOTS_FOLDER = ".", "plots"


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
