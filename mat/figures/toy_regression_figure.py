"""Figure 3 of the paper: the good, bad and ugly fits, as a PNG and as a training GIF."""
import os
from bisect import bisect_right

from mat.figures.toy_regression import MSE_RANGE, TRAIN_RANGE, CaseResult, probe_x, snapshot_mse, target_function
from XRM.results.figure_files import frame_steps, new_figure, render, save_png, write_gif

CASE_COLOURS = {"good": "tab:green", "bad": "tab:red", "ugly": "tab:purple"}
Y_LIMITS = (-0.9, 0.9)  # fixed, so that animation frames do not rescale


class FitPanels:
    """One panel per case: the learned function (eps = 0) against the true function, with
    the noisy training points. ``show`` redraws the learned curves, so one figure serves
    the final PNG and every frame of the GIF."""

    def __init__(self, cases: dict[str, CaseResult], dpi: float):
        self.cases = cases
        self.figure = new_figure(3.4 * len(cases), 3.3, dpi)
        axes = self.figure.subplots(1, len(cases), sharey=True, squeeze=False)[0]
        x = probe_x()
        self.axes = dict(zip(cases, axes))
        self.curves = {}
        for name, axis in self.axes.items():
            data = cases[name].training_set
            axis.plot(x, target_function(x), color="black", linestyle="--", linewidth=1.2,
                      label="true f(x)")
            (self.curves[name],) = axis.plot(x, cases[name].fit.snapshots[-1],
                                             color=CASE_COLOURS.get(name, "tab:blue"),
                                             linewidth=2, label="learned f(x, eps = 0)")
            axis.scatter(data.x, data.targets[:, 0], s=14, color="black", zorder=3,
                         label="noisy training points")
            # Grey out the edges: the mse in the titles is scored on MSE_RANGE only.
            for edge in ((TRAIN_RANGE[0], MSE_RANGE[0]), (MSE_RANGE[1], TRAIN_RANGE[1])):
                axis.axvspan(*edge, color="0.92", zorder=0)
            axis.set(xlim=TRAIN_RANGE, ylim=Y_LIMITS, xlabel="x")
        axes[0].legend(loc="lower left", fontsize="small")

    def show(self, snapshot_index: dict[str, int]) -> None:
        """Draw each case's learned function from its snapshot number ``snapshot_index[name]``."""
        for name, index in snapshot_index.items():
            case = self.cases[name]
            snapshot = case.fit.snapshots[index]
            self.curves[name].set_ydata(snapshot)
            self.axes[name].set_title(
                f"{name.capitalize()} memorization (σ = {case.metrics.sigma:g})\n"
                f"epoch {case.fit.snapshot_epochs[index]}, mse {snapshot_mse(snapshot):.1e}",
                fontsize="medium")


def save_fit_png(cases: dict[str, CaseResult], path: str | os.PathLike, dpi: float = 100) -> None:
    """The paper's Figure 3: every case's final fit, titled with its mse, written atomically."""
    panels = FitPanels(cases, dpi)
    panels.show({name: -1 for name in cases})
    save_png(panels.figure, path)


def save_training_gif(
    cases: dict[str, CaseResult], path: str | os.PathLike, max_frames: int = 60, dpi: float = 72
) -> None:
    """An animation of the fits over training, written atomically.

    Frames are at most ``max_frames`` recorded epochs, denser early on; a case that stopped
    early (its loss fell below the threshold) keeps showing its final fit.
    """
    all_epochs = sorted({epoch for case in cases.values() for epoch in case.fit.snapshot_epochs})
    panels = FitPanels(cases, dpi)
    frames = []
    for epoch in frame_steps(all_epochs, max_frames):
        # The latest snapshot at or before this epoch, for each case.
        panels.show({name: bisect_right(case.fit.snapshot_epochs, epoch) - 1
                     for name, case in cases.items()})
        frames.append(render(panels.figure))
        # Every frame has the same elements, so the first frame's layout serves them all;
        # re-solving the constrained layout would double the cost of each frame.
        panels.figure.set_layout_engine("none")
    write_gif(frames, path)
