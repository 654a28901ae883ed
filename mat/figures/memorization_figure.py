"""memorization_analysis.py's figure: histograms of the memorisation scores per group, one panel
per algorithm (ERM beside MAT)."""
import os

import torch

from mat.memorization import group_members
from XRM.results.figure_files import new_figure, save_png

BIN_WIDTH = 0.05  # bins centred on multiples of 0.05, so the scores of M = 20 models (multiples of 0.1) sit mid-bin


def save_memorization_png(scores: dict[str, torch.Tensor], y: torch.Tensor, a: torch.Tensor,
                          path: str | os.PathLike, dpi: float = 110) -> None:
    """Per algorithm, the distribution of its scores [n] in each (y, a) group, as the fraction of the
    group's examples in each bin (so a small minority shows as clearly as the majority)."""
    figure = new_figure(4.2 * len(scores), 3.4, dpi)
    axes = figure.subplots(1, len(scores), sharey=True, squeeze=False)[0]
    half = BIN_WIDTH / 2
    edges = torch.arange(-1.0 - half, 1.0 + BIN_WIDTH, BIN_WIDTH).tolist()
    groups = group_members(y, a)
    for axis, (algorithm, values) in zip(axes, scores.items()):
        for key, members in groups.items():
            count = int(members.sum())
            axis.hist(values[members].tolist(), bins=edges, weights=[1.0 / count] * count, histtype="step",
                      linewidth=1.6,
                      label=f"{key} (n = {count}, mean {values[members].mean().item():.2f})")
        axis.set(title=f"{algorithm}", xlabel="memorisation score (held-in acc - held-out acc)", xlim=(-1.05, 1.05))
        axis.legend(fontsize="x-small", loc="upper left")
    axes[0].set_ylabel("fraction of the group's examples")
    save_png(figure, path)
