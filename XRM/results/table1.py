"""Table 1 from a results folder: one cell per (dataset, algorithm, selection setting), each the
mean and std over the seeds of the combination its setting selects, written as CSV, Markdown
and LaTeX (booktabs, a standalone document). Reads records only; never trains, no torch.
"""
import statistics
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.common.fileio import atomic_write_text
from XRM.results import records
from XRM.results.collect import Summary, collect_runs, folder_names, summarize
from XRM.results.published_numbers import Published, published
from XRM.results.selection import criterion_for
from XRM.results.table1_settings import (DEFAULT_GROUP_INFERENCE, SELECTION_SETTINGS, SETTING_TITLES,
                                        group_inference_of, serving_folder, setting_rules)

if TYPE_CHECKING:
    import pandas as pd

#: the columns of table1.csv: accuracies in percent, std the population std (as the reference prints)
CSV_COLUMNS = ("dataset", "algorithm", "selection", "n_seeds", "te_wga_mean", "te_wga_std", "te_avg_mean", "te_avg_std")
#: the formats ``write_tables`` and ``read_results.py --table`` write, by file suffix
TABLE_FORMATS = ("csv", "md", "tex")
AVERAGE = "Average"

# (setting, algorithm, dataset) -> the folder of runs that serves it
Folders = dict[tuple[str, str, str], Path]


@dataclass
class TableCell:
    """One (dataset, algorithm, setting) of the table: the folder that serves it and its summary."""

    dataset: str
    algorithm: str
    selection: str  # the setting: va_wga or va_gi_wga
    folder: Path
    summary: Summary

    @property
    def group_labels(self) -> str:
        """The group-label kind of the folder: yes, no or inferred."""
        return self.folder.name.removeprefix("group_labels_")

    @property
    def worst_group(self) -> tuple[float, float]:
        """(mean, std) of the test worst-group accuracy, in percent."""
        return self.summary.stats[records.TE_WGA]

    @property
    def average(self) -> tuple[float, float]:
        """(mean, std) of the test average accuracy, in percent."""
        return self.summary.stats[records.TE_AVG_ACC]

    @property
    def fell_back(self) -> bool:
        """Whether the folder lacks the setting's criterion and was selected by its va_wga instead."""
        return self.summary.metric != self.selection

    @cached_property
    def group_inference(self) -> str | None:
        """The phase-1 algorithm whose inferred groups the runs read, None where they read none
        (XRM.results.table1_settings.group_inference_of: it reads the phase-1 run's results file, once
        per cell, however often the table's three files and their footers ask)."""
        return group_inference_of(self.summary.runs[0].header)

    def published(self) -> Published | None:
        """The published result comparable with this cell, if any."""
        return published(self.algorithm, self.selection, self.dataset, self.group_labels,
                         self.group_inference or DEFAULT_GROUP_INFERENCE)


def table_cells(folders: Folders, seed: int = 0) -> list[TableCell]:
    """The cells of ``folders`` whose runs are phase 2: each folder's best combination by its
    setting's criterion (``va_wga`` where a folder lacks ``va_gi_wga``) and its seeds."""
    cells = []
    for (setting, algorithm, dataset), folder in folders.items():
        runs = collect_runs(folder)
        if not runs or runs[0].phase != 2:
            continue
        metric = criterion_for(runs, setting)
        cells.append(TableCell(dataset, algorithm, setting, folder, summarize(runs, metric, seed)))
    return cells


def find_folders(root: Path, datasets: list[str] | None = None, algorithms: list[str] | None = None) -> Folders:
    """For each setting, algorithm and dataset under ``root`` (ours or the reference code's layout),
    the folder that serves it (XRM.results.table1_settings.serving_folder); phase-1 folders are left out by
    :func:`table_cells`."""
    folders = {}
    for setting in SELECTION_SETTINGS:
        for algorithm in folder_names(root, algorithms):
            for dataset in folder_names(root / algorithm, datasets):
                folder = serving_folder(root / algorithm / dataset, setting)
                if folder is not None:
                    folders[setting, algorithm, dataset] = folder
    return folders


def found_cells(root: Path, datasets: list[str] | None, algorithms: list[str] | None, seed: int = 0) -> list[TableCell]:
    """The cells of every phase-2 folder under ``root``; a folder without a finished run is
    named on stderr and left out. A UserError when no cell remains."""
    cells = []
    for key, folder in find_folders(root, datasets, algorithms).items():
        try:
            cells += table_cells({key: folder}, seed)
        except UserError as error:
            print(f"warning: left out of the table: {error}", file=sys.stderr)
    if not cells:
        raise UserError(f"no phase-2 results under {root} to tabulate; pass the --out_dir of {command('train')} or "
                        f"{command('reproduce')}")
    return cells


# ---------------------------------------------------------------------------------------- CSV


def cells_frame(cells: list[TableCell]) -> "pd.DataFrame":
    """Table 1 as a DataFrame: one row per cell, CSV_COLUMNS (accuracies in percent)."""
    import pandas as pd

    rows = [(cell.dataset, cell.algorithm, cell.selection, len(cell.summary.runs), *cell.worst_group, *cell.average)
            for cell in cells]
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def to_csv(cells: list[TableCell]) -> str:
    """table1.csv: one row per cell, CSV_COLUMNS (numbers in percent, 2 decimals)."""
    return cells_frame(cells).to_csv(index=False, float_format="%.2f", lineterminator="\n")


# ------------------------------------------------------------------------------ the grid layout


@dataclass
class Grid:
    """The cells arranged as the printed tables show them: a block per setting, a row per
    algorithm, a column pair (average, worst-group) per dataset and the Average over datasets."""

    datasets: list[str]
    blocks: list[tuple[str, list[str]]]  # (setting, its algorithms in order)
    cells: dict[tuple[str, str, str], TableCell]

    @classmethod
    def of(cls, cells: list[TableCell]) -> "Grid":
        """The grid of ``cells``, datasets and algorithms in the order they first appear."""
        datasets = list(dict.fromkeys(cell.dataset for cell in cells))
        blocks = [(setting, list(dict.fromkeys(c.algorithm for c in cells if c.selection == setting)))
                  for setting in SELECTION_SETTINGS if any(c.selection == setting for c in cells)]
        return cls(datasets, blocks, {(c.selection, c.algorithm, c.dataset): c for c in cells})

    def average(self, setting: str, algorithm: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """(average, worst-group) means and stds over the datasets, as the reference's Average;
        None unless the algorithm has every dataset of the table."""
        row = [self.cells.get((setting, algorithm, dataset)) for dataset in self.datasets]
        if any(cell is None for cell in row):
            return None

        def mean_of(pairs: list[tuple[float, float]]) -> tuple[float, float]:
            return statistics.mean(mean for mean, _ in pairs), statistics.mean(std for _, std in pairs)

        return mean_of([cell.average for cell in row]), mean_of([cell.worst_group for cell in row])


def _number(mean_std: tuple[float, float], published_value: float | None, plus_minus: str, paper: str) -> str:
    text = f"{mean_std[0]:.1f}{plus_minus.format(std=mean_std[1])}"
    return text if published_value is None else text + paper.format(value=published_value)


def _row_values(grid: Grid, setting: str, algorithm: str, plus_minus: str, paper: str, missing: str,
                fallback_mark: str) -> list[str]:
    values = []
    for dataset in grid.datasets:
        cell = grid.cells.get((setting, algorithm, dataset))
        if cell is None:
            values += [missing, missing]
            continue
        reference = cell.published()
        mark = fallback_mark if cell.fell_back else ""
        values.append(_number(cell.average, reference and reference.average, plus_minus, paper))
        values.append(_number(cell.worst_group, reference and reference.worst_group, plus_minus, paper) + mark)
    average = grid.average(setting, algorithm)
    values += [missing, missing] if average is None else [_number(pair, None, plus_minus, paper) for pair in average]
    return values


FOOTNOTE = ("mean ± std over the seeds of the selected combination (test accuracy, %); (x): the published number "
            "(Bayat et al., 2025; BAM: Li et al., 2024; GroupDRO: Pezeshki et al., 2024, human groups where validation "
            "groups are known, XRM's otherwise; GroupDRO on EIIL's groups: Creager et al., 2021; DPE: To et al., 2025, "
            "worst-group only); †: the folder records no va_gi_wga, so its va_wga selected it (over the phase-1 inferred groups for group_labels_inferred, over "
            "the classes for group_labels_no)")


def block_rules(grid: "Grid") -> list[tuple[str, str]]:
    """(setting title, its rules: group definition, evaluation groups, selection rule) per block of the table."""
    rules = []
    for setting, _ in grid.blocks:
        inference = {cell.group_inference for (block, _, _), cell in grid.cells.items() if block == setting}
        names = "/".join(sorted(name for name in inference if name is not None)) or DEFAULT_GROUP_INFERENCE
        rules.append((SETTING_TITLES[setting], setting_rules(setting, names)))
    return rules


# ----------------------------------------------------------------------------------- Markdown


def to_markdown(cells: list[TableCell]) -> str:
    """table1.md: a table per setting, rows the algorithms, columns datasets x (average, worst-group)
    and their Average."""
    grid = Grid.of(cells)
    header = ["algorithm"] + [f"{name} {kind}" for name in [*grid.datasets, AVERAGE] for kind in ("avg", "worst")]
    lines = ["# Table 1", ""]
    for setting, algorithms in grid.blocks:
        lines += [f"## {SETTING_TITLES[setting]}", "", "| " + " | ".join(header) + " |",
                  "|---" + "|---:" * (len(header) - 1) + "|"]
        for algorithm in algorithms:
            values = _row_values(grid, setting, algorithm, " ± {std:.1f}", " ({value:.1f})", "–", " †")
            lines.append(f"| {algorithm} | " + " | ".join(values) + " |")
        lines.append("")
    lines += [f"{title}: {rules}." for title, rules in block_rules(grid)] + ["", FOOTNOTE]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(character, character) for character in text)


def to_latex(cells: list[TableCell]) -> str:
    """table1.tex: a standalone document (article, booktabs) with one tabular, a block per setting."""
    grid = Grid.of(cells)
    groups = [*grid.datasets, AVERAGE]
    width = 1 + 2 * len(groups)
    lines = [r"\documentclass{article}", r"\usepackage[landscape,margin=1.5cm]{geometry}", r"\usepackage{booktabs}",
             r"\begin{document}", r"\begin{table}[ht]", r"\centering", r"\small",
             r"\begin{tabular}{l" + "rr" * len(groups) + "}", r"\toprule",
             " & ".join([""] + [rf"\multicolumn{{2}}{{c}}{{{latex_escape(name)}}}" for name in groups]) + r" \\",
             " ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(groups))),
             " & ".join(["Algorithm"] + ["Avg.", "Worst"] * len(groups)) + r" \\"]
    for setting, algorithms in grid.blocks:
        lines += [r"\midrule", rf"\multicolumn{{{width}}}{{l}}{{\emph{{{latex_escape(SETTING_TITLES[setting])}}}}} \\",
                  r"\midrule"]
        for algorithm in algorithms:
            values = _row_values(grid, setting, algorithm, r"{{\scriptsize$\pm${std:.1f}}}",
                                 r" {{\scriptsize({value:.1f})}}", "--", r"$^\dagger$")
            lines.append(" & ".join([latex_escape(algorithm)] + values) + r" \\")
    footer = " ".join(f"{title}: {rules}." for title, rules in block_rules(grid)) + " " + FOOTNOTE
    caption = latex_escape(footer).replace("±", r"$\pm$").replace("†", r"$^\dagger$")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}", r"\end{document}"]
    return "\n".join(lines) + "\n"


WRITERS = {"csv": to_csv, "md": to_markdown, "tex": to_latex}


def write_tables(cells: list[TableCell], out_dir: Path, name: str = "table1") -> list[Path]:
    """``<out_dir>/<name>.csv``, ``.md`` and ``.tex``, each written atomically; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in TABLE_FORMATS:
        path = out_dir / f"{name}.{suffix}"
        atomic_write_text(WRITERS[suffix](cells), path)
        paths.append(path)
    return paths
