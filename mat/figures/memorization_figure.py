"""memorization_analysis.py's figure: histograms of the memorisation scores, one panel per (algorithm,
group): a row per algorithm (ERM above MAT), a column per group, so that no group hides another."""
import os

import torch
from matplotlib.figure import Figure

from mat.memorization import group_members
from XRM.results.figure_files import new_figure, save_png

BIN_WIDTH = 0.05  # bins centred on multiples of 0.05, so the scores of M = 20 models (multiples of 0.1) sit mid-bin
MARGIN = 0.05  # room left on the score axis beyond the lowest and the highest bin


def score_bin_edges(scores: dict[str, torch.Tensor]) -> list[float]:
    """Bins of width BIN_WIDTH centred on its multiples, from the bin of the lowest score of any
    algorithm to that of the highest (scores lie in [-1, 1]; most lie in [0, 1])."""
    values = torch.cat([tensor.double().flatten() for tensor in scores.values()])
    first = round(values.min().item() / BIN_WIDTH)
    last = round(values.max().item() / BIN_WIDTH)
    return [(centre - 0.5) * BIN_WIDTH for centre in range(first, last + 2)]


def memorization_figure(scores: dict[str, torch.Tensor], y: torch.Tensor, a: torch.Tensor, dpi: float = 110) -> Figure:
    """Per algorithm (row) and (y, a) group (column), the histogram of the algorithm's scores [n] on the
    group's examples as the fraction of the group in each bin (a small minority shows as clearly as the
    majority); each panel's bars are labelled with the group, its size and its mean score. The score axis,
    shared, spans the scores' range."""
    groups = group_members(y, a)
    figure = new_figure(2.6 * len(groups) + 0.6, 2.2 * len(scores) + 0.4, dpi)
    axes = figure.subplots(len(scores), len(groups), sharex=True, sharey=True, squeeze=False)
    edges = score_bin_edges(scores)
    colours = [f"C{index}" for index in range(len(groups))]
    for row, (algorithm, values) in zip(axes, scores.items()):
        for axis, colour, (key, members) in zip(row, colours, groups.items()):
            count = int(members.sum())
            axis.hist(values[members].tolist(), bins=edges, weights=[1.0 / count] * count, color=colour,
                      label=f"{key}: n = {count}, mean {values[members].double().mean().item():.2f}")
            axis.set_title(f"{algorithm}, {key}", fontsize="medium")
            axis.legend(fontsize="x-small", loc="upper center", handlelength=1)
    axes[0][0].set(xlim=(edges[0] - MARGIN, edges[-1] + MARGIN), ylim=(0, 1.15))
    for axis in axes[-1]:
        axis.set_xlabel("memorisation score")
    for axis in axes[:, 0]:
        axis.set_ylabel("fraction of the group")
    figure.suptitle("memorisation score = held-in accuracy - held-out accuracy, per training example", fontsize="medium")
    return figure


def save_memorization_png(scores: dict[str, torch.Tensor], y: torch.Tensor, a: torch.Tensor,
                          path: str | os.PathLike, dpi: float = 110) -> None:
    """Write memorization_figure(scores, y, a) to ``path`` as a PNG."""
    save_png(memorization_figure(scores, y, a, dpi), path)
