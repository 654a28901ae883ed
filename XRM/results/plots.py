"""The protocol's plots, as PNG files (matplotlib, imported only by the commands that plot):

- ``curves_<Dataset>.png``: validation and test worst-group accuracy, test average accuracy and
  the training loss (right axis) against steps of each algorithm's selected run, a panel per
  (setting, algorithm), the selected step marked;
- ``groups_<Dataset>.png``: the test accuracy of every group of each algorithm's selected
  combination, mean over its seeds (each at its selected step) with the std as error bars, the
  groups named by label, attribute and size (from the runs' headers), a panel per setting;
- ``flip_rate_<Dataset>.png``: phase 1's flip rate against steps for every combination of the
  selection seed, the selected combination marked (XRM's runs; an EIIL phase 1 records no flip rate).
"""
from pathlib import Path

from XRM.results import records
from XRM.results.collect import RunResult, collect_runs
from XRM.results.selection import best_phase_1_comb, selected_record, selection_seed
from XRM.results.table1 import Grid, TableCell
from XRM.results.table1_settings import SETTING_TITLES

DPI = 100
PANEL_INCHES = (3.2, 2.4)  # one panel of the curves
BARS_INCHES = (6.4, 2.4)  # one setting of the group bars
FLIP_RATE_INCHES = (6.4, 3.6)


def curves_size(num_settings: int, num_algorithms: int) -> tuple[int, int]:
    """The pixel size of a curves figure with a row per setting and a column per algorithm."""
    return round(PANEL_INCHES[0] * num_algorithms * DPI), round(PANEL_INCHES[1] * num_settings * DPI)


def groups_size(num_settings: int) -> tuple[int, int]:
    """The pixel size of a group-accuracy figure with a panel per setting."""
    return round(BARS_INCHES[0] * DPI), round(BARS_INCHES[1] * num_settings * DPI)


def flip_rate_size() -> tuple[int, int]:
    """The pixel size of a flip-rate figure."""
    return round(FLIP_RATE_INCHES[0] * DPI), round(FLIP_RATE_INCHES[1] * DPI)


def _figure(width: float, height: float):
    from XRM.results.figure_files import new_figure

    return new_figure(width, height, DPI)


def _selected(cell: TableCell) -> tuple[RunResult, dict]:
    run = cell.summary.selected_run
    return run, selected_record(run.records, cell.summary.metric)


def _percent(run: RunResult, key: str) -> tuple[list[int], list[float]]:
    points = [(record[records.STEP], 100 * record[key]) for record in run.records if record.get(key) is not None]
    return [step for step, _ in points], [value for _, value in points]


def _plot_training_loss(panel, run: RunResult) -> None:
    """The run's training loss (mean since the previous evaluation) on the panel's right axis."""
    points = [(record[records.STEP], record[records.TRAIN_LOSS]) for record in run.records
              if record.get(records.TRAIN_LOSS) is not None]
    if not points:
        return
    loss = panel.twinx()
    loss.plot([step for step, _ in points], [value for _, value in points], color="tab:red", linewidth=0.8, alpha=0.7)
    loss.set_ylim(bottom=0)
    loss.tick_params(labelsize=7, colors="tab:red")
    loss.set_ylabel("train loss", fontsize=7, color="tab:red")


def plot_curves(grid: Grid, dataset: str, path: Path) -> Path:
    """Validation (the setting's criterion) and test worst-group accuracy against steps of each
    selected run; a dashed line and dots at the selected step."""
    from XRM.results.figure_files import save_png

    algorithms = list(dict.fromkeys(a for _, block in grid.blocks for a in block))
    figure = _figure(PANEL_INCHES[0] * len(algorithms), PANEL_INCHES[1] * len(grid.blocks))
    axes = figure.subplots(len(grid.blocks), len(algorithms), squeeze=False, sharey=True)
    for row, (setting, _) in enumerate(grid.blocks):
        for column, algorithm in enumerate(algorithms):
            panel = axes[row][column]
            cell = grid.cells.get((setting, algorithm, dataset))
            panel.set_title(f"{algorithm}, {setting}", fontsize=9)
            if cell is None:
                panel.text(0.5, 0.5, "no results", ha="center", va="center", transform=panel.transAxes)
                continue
            run, chosen = _selected(cell)
            for key, style in ((cell.summary.metric, "-"), (records.TE_WGA, "--")):
                steps, values = _percent(run, key)
                panel.plot(steps, values, style, label=key)
                panel.plot([chosen[records.STEP]], [100 * chosen[key]], "o", color=panel.lines[-1].get_color())
            steps, values = _percent(run, records.TE_AVG_ACC)
            panel.plot(steps, values, ":", color="grey", label=records.TE_AVG_ACC)
            _plot_training_loss(panel, run)
            panel.axvline(chosen[records.STEP], color="grey", linestyle=":", linewidth=1)
            panel.set_xlabel("step", fontsize=8)
            panel.legend(fontsize=7, loc="best")
        axes[row][0].set_ylabel("accuracy (%)", fontsize=8)
    save_png(figure, path)
    return path


def group_label(group: int, table: dict) -> str:
    """A group's tick label: its label and attribute (named where the dataset knows) and its size."""
    entry = table.get(str(group))
    if not isinstance(entry, dict):
        return f"group {group}"
    label = entry.get("label", f"y={entry.get('y')}")
    attribute = entry.get("attribute", f"a={entry.get('a')}")
    return f"{label}\n{attribute}\nn={entry.get('n')}"


def seed_spread(cell: TableCell) -> dict[int, tuple[float, float, int]]:
    """Group -> (mean, population std, seeds) of its test accuracy (%) over the cell's seeds, each
    seed's run read at its selected step."""
    by_group: dict[int, list[float]] = {}
    for run in cell.summary.runs:
        record = selected_record(run.records, cell.summary.metric) or {}
        for group, value in records.test_group_accuracies(record).items():
            by_group.setdefault(group, []).append(100 * value)
    spread = {}
    for group, values in by_group.items():
        mean = sum(values) / len(values)
        spread[group] = (mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5, len(values))
    return spread


def plot_group_accuracies(grid: Grid, dataset: str, path: Path) -> Path:
    """Test accuracy of every group (te_acc_group_<g>) of each algorithm's selected combination: bars
    of the mean over its seeds, error bars of the std; groups named by label, attribute and size."""
    from XRM.results.figure_files import save_png

    figure = _figure(BARS_INCHES[0], BARS_INCHES[1] * len(grid.blocks))
    axes = figure.subplots(len(grid.blocks), 1, squeeze=False)
    for row, (setting, algorithms) in enumerate(grid.blocks):
        panel = axes[row][0]
        cells = [grid.cells[setting, a, dataset] for a in algorithms if (setting, a, dataset) in grid.cells]
        shown = [(cell, seed_spread(cell)) for cell in cells]
        shown = [(cell, spread) for cell, spread in shown if spread]
        groups = sorted({group for _, spread in shown for group in spread})
        width = 0.8 / max(len(shown), 1)
        for index, (cell, spread) in enumerate(shown):
            positions = [groups.index(group) + (index - (len(shown) - 1) / 2) * width for group in spread]
            seeds = max(count for _, _, count in spread.values())
            panel.bar(positions, [mean for mean, _, _ in spread.values()], width,
                      yerr=[std for _, std, _ in spread.values()], capsize=2,
                      label=f"{cell.algorithm} ({seeds} seed{'s' if seeds > 1 else ''})")
        table = shown[0][0].summary.selected_run.header.get(records.TEST_GROUPS, {}) if shown else {}
        panel.set_xticks(range(len(groups)), [group_label(group, table) for group in groups], fontsize=7)
        panel.set_ylim(0, 119)  # room above the bars for the legend
        panel.set_ylabel("test acc. (%)", fontsize=8)
        panel.set_title(SETTING_TITLES[setting], fontsize=9)
        if shown:
            panel.legend(fontsize=7, ncols=len(shown), loc="upper center")
        else:
            panel.text(0.5, 0.5, "no per-group accuracies recorded", ha="center", va="center",
                       transform=panel.transAxes)
    save_png(figure, path)
    return path


def plot_flip_rates(runs: list[RunResult], path: Path) -> Path:
    """Phase 1's flip rate against steps for every combination of the selection seed; the one
    selected (the highest final flip rate) drawn thick and named in the legend."""
    from XRM.results.figure_files import save_png

    seed = selection_seed(runs, 0)
    best = best_phase_1_comb(runs, seed)
    figure = _figure(*FLIP_RATE_INCHES)
    panel = figure.subplots()
    for run in sorted((run for run in runs if run.seed == seed), key=lambda r: r.hparams_comb):
        steps, rates = _percent(run, records.FLIP_RATE)
        chosen = run.hparams_comb == best
        panel.plot(steps, rates, linewidth=2.5 if chosen else 1, alpha=1 if chosen else 0.6, zorder=3 if chosen else 2,
                   label=f"combination {run.hparams_comb}" + (" (selected)" if chosen else ""))
    panel.set_xlabel("step")
    panel.set_ylabel("flip rate (%)")
    panel.set_title(f"phase 1 (XRM), seed {seed}", fontsize=10)
    panel.legend(fontsize=7, ncols=2)
    save_png(figure, path)
    return path


def write_plots(cells: list[TableCell], phase_1_runs: dict[str, list[RunResult]], out_dir: Path) -> list[Path]:
    """Every plot of the cells' datasets and of ``phase_1_runs`` (dataset -> its phase-1 runs)
    under ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    grid = Grid.of(cells) if cells else None
    for dataset in grid.datasets if grid else []:
        paths.append(plot_curves(grid, dataset, out_dir / f"curves_{dataset}.png"))
        paths.append(plot_group_accuracies(grid, dataset, out_dir / f"groups_{dataset}.png"))
    for dataset, runs in phase_1_runs.items():
        if any(records.FLIP_RATE in record for run in runs for record in run.records):  # XRM's; EIIL has none
            paths.append(plot_flip_rates(runs, out_dir / f"flip_rate_{dataset}.png"))
    return paths


def find_phase_1_runs(root: Path, datasets: list[str] | None = None) -> dict[str, list[RunResult]]:
    """Dataset -> the phase-1 runs of every folder under ``root`` (``<ALGO>/<Dataset>/group_labels_*``),
    of ``datasets`` (in any case) only when given."""
    found, wanted = {}, {name.casefold() for name in datasets or ()}  # dataset names in any case
    for folder in sorted(root.glob("*/*/group_labels_*")):
        if wanted and folder.parent.name.casefold() not in wanted:
            continue
        runs = collect_runs(folder)
        if runs and runs[0].phase == 1:
            found[folder.parent.name] = runs
    return found
