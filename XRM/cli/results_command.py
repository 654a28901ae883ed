"""Print result tables from a results folder: one row per hyper-parameter combination, then the best;
or the paper's Table 1 (--table csv|md|tex) and the protocol's plots (--plots DIR).
The command line of XRM/read_results.py, of the console script xrm-results and of ``python -m XRM.cli results``:

    python XRM/read_results.py --dir out --datasets Synthetic --algorithms MAT ERM --group_labels no
    python XRM/read_results.py --dir out --table tex > table1.tex
    python XRM/read_results.py --dir out --plots out/plots
"""
import argparse
import sys
from pathlib import Path

from XRM.cli.entry_point import command_line, output_folder
from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.results.collect import broken_runs, collect_runs, folder_names, format_table, not_selected
from XRM.results.records import SELECTION_METRICS, group_labels_folder
from XRM.results.selection import criterion_for
from XRM.results.table1 import TABLE_FORMATS, WRITERS, found_cells
from XRM.results.table1_settings import records_inferred_validation_groups


def get_args_parser() -> argparse.ArgumentParser:
    """Arguments of read_results."""
    parser = argparse.ArgumentParser(description="Summarise the runs under a results folder.")
    parser.add_argument("--dir", "--out_dir", dest="dir", required=True, help="the --out_dir of main.py (either spelling)")
    parser.add_argument("--datasets", nargs="+", default=None, help="datasets to show, in any case (default: all found)")
    parser.add_argument("--algorithms", nargs="+", default=None, help="algorithms to show (default: all found)")
    parser.add_argument("--group_labels", nargs="+", default=["yes", "no", "inferred"],
                        choices=["yes", "no", "inferred"], help="which group-label folders to show")
    parser.add_argument("--selection_criterion", "--best_hparams_comb_selection_metric", dest="selection_criterion",
                        choices=SELECTION_METRICS, default=None,
                        help="metric that picks the step and the combination of phase-2 runs (default va_wga; "
                             "phase-1 runs are always selected by their own metric: XRM's flip_rate, EIIL's "
                             "eiil_penalty); main.py's spelling is taken too")
    parser.add_argument("--seed", type=int, default=0, help="seed whose runs choose the combination")
    parser.add_argument("--table", choices=TABLE_FORMATS, default=None,
                        help="print Table 1 in this format instead (a block per selection setting, va_wga and "
                             "va_gi_wga, whatever the folder holds; --group_labels and --selection_criterion do not "
                             "apply: each setting reads the folder that serves it)")
    parser.add_argument("--plots", default=None, metavar="DIR",
                        help="write the protocol's plots (PNG) into DIR: curves and group accuracies of the selected "
                             "runs, phase 1's flip rates")
    return parser


def main(args: argparse.Namespace) -> int:
    """Print a table per (algorithm, dataset, group-label source) found under --dir, or Table 1
    (--table), and write the plots (--plots)."""
    root = Path(args.dir)
    if not root.is_dir():
        raise UserError(f"no results folder {root}; pass the --out_dir you gave {command('train')}")
    if args.plots:
        output_folder(args.plots, "--plots")
    if args.table or args.plots:
        return write_table_and_plots(args, root)
    shown = 0
    for algorithm in folder_names(root, args.algorithms):
        for dataset in folder_names(root / algorithm, args.datasets):
            for source in args.group_labels:
                shown += print_folder(root / algorithm / dataset / group_labels_folder(source), args)
    if not shown:
        raise UserError(f"no results found under {root} for the datasets, algorithms and group labels asked for"
                        + _one_folder_hint(root, args))
    return 0


def _one_folder_hint(root: Path, args: argparse.Namespace) -> str:
    """Where an asked-for ``group_labels_inferred`` folder is missing because reproduce.py trained the algorithm
    once for both settings (its ``group_labels_yes`` runs record va_gi_wga): how to read those; else ""."""
    if "inferred" not in args.group_labels:
        return ""
    for algorithm in folder_names(root, args.algorithms):
        for dataset in folder_names(root / algorithm, args.datasets):
            if records_inferred_validation_groups(root / algorithm / dataset / group_labels_folder("yes")):
                return (f"; {algorithm}'s runs for both settings are in {algorithm}/{dataset}/group_labels_yes (they "
                        "record va_gi_wga): --group_labels yes --selection_criterion va_gi_wga")
    return ""


def print_folder(directory: Path, args: argparse.Namespace) -> bool:
    """Print the table of one folder of runs (the runs not selected, and why, below it); whether
    the folder holds any run."""
    runs = collect_runs(directory) if directory.is_dir() else []
    broken = broken_runs(directory, runs)
    title = f"\n== {directory.parents[1].name} / {directory.parent.name} / {directory.name}"
    if not runs:
        if broken:
            print(f"{title}  (no records to select from)\n" + "\n".join(not_selected([], broken)))
        return bool(broken)
    metric = criterion_for(runs, args.selection_criterion)
    print(f"{title}  (phase {runs[0].phase}, selected by {metric})")
    print(format_table(runs, metric, args.seed, broken))
    return True


def write_table_and_plots(args: argparse.Namespace, root: Path) -> int:
    """--table: print Table 1 in its format; --plots: write the plots and list them."""
    from XRM.results.plots import find_phase_1_runs, write_plots

    phase_1_runs = find_phase_1_runs(root, args.datasets) if args.plots else {}
    try:
        cells = found_cells(root, args.datasets, args.algorithms, args.seed)
    except UserError:
        if args.table or not phase_1_runs:
            raise
        cells = []  # a phase-1 folder alone: its flip rates are the only plot
    if args.table:
        print(WRITERS[args.table](cells), end="")
    if args.plots:
        for path in write_plots(cells, phase_1_runs, Path(args.plots)):
            print(f"wrote {path}", file=sys.stderr)
    return 0


run = command_line(get_args_parser, main)
