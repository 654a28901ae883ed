"""A results folder as one pandas DataFrame: one row per evaluation of every run, for notebooks.

    from XRM.results.frame import load_records
    df = load_records("phase_2_results")
    df[df.finished].groupby(["algorithm", "dataset", "hpcomb"]).te_wga.max()

Reads folders written by main.py and by the reference code alike
(``<out>/<ALGO>/<Dataset>/group_labels_<kind>/results_hpcomb_<k>_seed<s>.json``). No torch.
"""
from pathlib import Path

import pandas as pd

from XRM.results import records
from XRM.results.collect import RunResult, collect_runs, folder_names

#: the columns that say which run an evaluation belongs to, first in every frame
RUN_COLUMNS = ("algorithm", "dataset", "group_labels", "hpcomb", "seed", "finished")
GROUP_LABELS_PREFIX = "group_labels_"
#: where and with what each run trained (its header's provenance; None for the reference code's runs), last
PROVENANCE_COLUMNS = ("device_used", "torch", "cuda", "toolkit", "commit", "host", "started")


def is_finished(run: RunResult) -> bool:
    """Whether a run has finished: its done file exists. A run whose header names no done file
    (the reference code writes none) counts as finished, as read_results selects it."""
    return run.files.done.exists() or "done_path" not in run.header


def run_frame(run: RunResult, algorithm: str, dataset: str, group_labels: str) -> pd.DataFrame:
    """One run's evaluations: its identity columns, then ``step`` and every metric recorded
    (a metric missing from an evaluation, or null there, is NaN)."""
    frame = pd.DataFrame.from_records(run.records)
    identity = {"algorithm": algorithm, "dataset": dataset, "group_labels": group_labels,
                "hpcomb": run.hparams_comb, "seed": run.seed, "finished": is_finished(run)}
    for position, (column, value) in enumerate(identity.items()):
        frame.insert(position, column, value)
    provenance = run.header.get("provenance")
    for column in PROVENANCE_COLUMNS:
        frame[column] = provenance.get(column) if isinstance(provenance, dict) else None
    return frame


def load_records(out_dir: str | Path, algorithms: list[str] | None = None,
                 datasets: list[str] | None = None) -> pd.DataFrame:
    """Every record of the results folder ``out_dir`` (an ``--out_dir`` of main.py, or of the
    reference code) as one DataFrame: a row per evaluation, with the columns ``algorithm``,
    ``dataset``, ``group_labels`` ('yes', 'no' or 'inferred'), ``hpcomb``, ``seed``,
    ``finished`` (see :func:`is_finished`), ``step``, then every metric recorded
    (``va_wga``, ``te_avg_acc``, ..., ``flip_rate`` for phase 1, ``train_loss``, ``lr``), then the
    run's provenance (PROVENANCE_COLUMNS), sorted by run and step.

    ``algorithms`` / ``datasets`` keep only those folders (default: all found). An unreadable
    results file is named on stderr and skipped, as read_results does; an empty folder gives an
    empty frame with the identity columns and ``step``.
    """
    root = Path(out_dir)
    frames = []
    for algorithm in folder_names(root, algorithms):
        for dataset in folder_names(root / algorithm, datasets):
            for directory in sorted((root / algorithm / dataset).glob(GROUP_LABELS_PREFIX + "*")):
                group_labels = directory.name[len(GROUP_LABELS_PREFIX):]
                frames += [run_frame(run, algorithm, dataset, group_labels) for run in collect_runs(directory)]
    if not frames:
        return pd.DataFrame(columns=[*RUN_COLUMNS, records.STEP])
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["algorithm", "dataset", "group_labels", "hpcomb", "seed", records.STEP],
                              kind="stable", ignore_index=True)
    return frame
