"""Figure 1 of the paper: per run, group accuracies over training above the decision
boundary in the (x_y, x_a) plane, as a PNG and as a training GIF."""
import os

import torch
from matplotlib.colors import LinearSegmentedColormap

from mat.figures.interpretable import ACCURACY_KEYS, RunResult
from XRM.results.figure_files import frame_steps, new_figure, render, save_png, write_gif

PLANE_LIMITS = {"x_y": (-2.0, 2.0), "x_a": (-10.0, 10.0)}
GRID_POINTS = 100  # per side of the background image
CLASS_COLOURS = ("#2F6DB5", "#E07B28")  # y = 0 (x_y near +1), y = 1 (x_y near -1)
#: probability of class 1, white where the model is undecided; in a few steps, like contour
#: bands, which also leaves the GIF's 64-colour palette room for the curves
BACKGROUND = LinearSegmentedColormap.from_list("class_probability", ["#8DB8E2", "white", "#F5C08F"], N=14)
#: accuracy column -> (label, colour, line style)
CURVE_STYLES = {
    "maj_tr": ("majority train", "black", "-"),
    "min_tr": ("minority train", "black", "--"),
    "maj_te": ("majority test", "#C8321E", "-"),
    "min_te": ("minority test", "#C8321E", "--"),
}
TITLES = {"ERM_sigma0": "ERM, σ = 0 (no memorization)", "ERM_sigma": "ERM, σ = {sigma:g}",
          "MAT_sigma": "MAT, σ = {sigma:g}"}


def plane_grid() -> torch.Tensor:
    """The (x_y, x_a) points of the background image, [GRID_POINTS^2, 2], row-major from the bottom."""
    x_y = torch.linspace(*PLANE_LIMITS["x_y"], GRID_POINTS)
    x_a = torch.linspace(*PLANE_LIMITS["x_a"], GRID_POINTS)
    rows, columns = torch.meshgrid(x_a, x_y, indexing="ij")
    return torch.stack([columns.reshape(-1), rows.reshape(-1)], dim=1)


def class_one_probability(plane_weights: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """p(y = 1) of the linear model with weights [K, 2] on (x_y, x_a), noise at 0, as an image."""
    return torch.softmax(grid @ plane_weights.T, dim=1)[:, 1].reshape(GRID_POINTS, GRID_POINTS)


def boundary_line(plane_weights: torch.Tensor) -> tuple[list[float], list[float]]:
    """Two far-apart points of the line where both logits are equal; none while they always are."""
    normal = plane_weights[1] - plane_weights[0]
    length = normal.norm().item()
    if length == 0:
        return [], []
    # Along the boundary, far beyond the plot's limits on both sides; the axes clip it.
    direction = torch.stack([-normal[1], normal[0]]) / length * 1e3
    return [-direction[0].item(), direction[0].item()], [-direction[1].item(), direction[1].item()]


class RunPanels:
    """A column per run: accuracies against epochs on top, the boundary and the training
    points below. ``show(epoch)`` redraws the state after ``epoch`` epochs, so one figure
    serves the PNG and every frame of the GIF."""

    def __init__(self, runs: dict[str, RunResult], dpi: float) -> None:
        self.runs = runs
        self.grid = plane_grid()
        self.figure = new_figure(4.2 * len(runs), 7.6, dpi)
        axes = self.figure.subplots(2, len(runs), squeeze=False, gridspec_kw={"height_ratios": [2, 3]})
        self.curve_axes = dict(zip(runs, axes[0]))
        self.plane_axes = dict(zip(runs, axes[1]))
        self.curves, self.images, self.boundaries = {}, {}, {}
        extent = (*PLANE_LIMITS["x_y"], *PLANE_LIMITS["x_a"])
        for name, run in runs.items():
            curve_axis, plane_axis = self.curve_axes[name], self.plane_axes[name]
            self.curves[name] = {key: curve_axis.plot([], [], color=colour, linestyle=style, linewidth=1.8,
                                                      label=label)[0]
                                 for key, (label, colour, style) in CURVE_STYLES.items()}
            curve_axis.set(xlim=(0, len(run.accuracies) - 1), ylim=(-0.02, 1.02), xlabel="epochs",
                           ylabel="accuracy")
            curve_axis.grid(color="0.85", linewidth=0.5)
            self.images[name] = plane_axis.imshow(
                torch.full((GRID_POINTS, GRID_POINTS), 0.5), extent=extent, origin="lower", aspect="auto",
                cmap=BACKGROUND, vmin=0, vmax=1, interpolation="bilinear")
            (self.boundaries[name],) = plane_axis.plot([], [], color="0.15", linewidth=1.5, label="decision boundary (noise at 0)")
            self._scatter_training_points(plane_axis, run)
            plane_axis.set(xlim=PLANE_LIMITS["x_y"], ylim=PLANE_LIMITS["x_a"])
            plane_axis.set_xlabel("$x_y$ (core)")
            plane_axis.set_ylabel("$x_a$ (spurious)")
        first = next(iter(runs))
        # The curves leave the middle right free; the points fill every corner of the plane.
        self.curve_axes[first].legend(loc="center right", fontsize="small")
        handles, labels = self.plane_axes[first].get_legend_handles_labels()
        self.figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")

    @staticmethod
    def _scatter_training_points(axis, run: RunResult) -> None:
        points, y = run.train.x[:, :2], run.train.y
        majority = run.train.a == y
        for label in (0, 1):
            for in_majority, marker, group in ((True, "o", "majority"), (False, "^", "minority")):
                chosen = (y == label) & (majority == in_majority)
                axis.scatter(points[chosen, 0], points[chosen, 1], s=16 if in_majority else 30, marker=marker,
                             color=CLASS_COLOURS[label], edgecolors="white", linewidths=0.4,
                             label=f"y = {label}, {group}", zorder=3)

    def show(self, epoch: int | None = None, with_epoch: bool = False) -> None:
        """Draw every run after ``epoch`` epochs (None: the end of training); ``with_epoch``
        puts the epoch in the titles (animation frames)."""
        for name, run in self.runs.items():
            shown = len(run.accuracies) - 1 if epoch is None else min(epoch, len(run.accuracies) - 1)
            epochs = torch.arange(shown + 1)
            for column, key in enumerate(ACCURACY_KEYS):
                self.curves[name][key].set_data(epochs, run.accuracies[: shown + 1, column])
            weights = run.plane_weights[shown]
            self.images[name].set_data(class_one_probability(weights, self.grid))
            self.boundaries[name].set_data(*boundary_line(weights))
            minority_test = run.accuracies[shown, ACCURACY_KEYS.index("min_te")].item()
            when = f"epoch {shown}, " if with_epoch else ""
            self.curve_axes[name].set_title(f"{TITLES[name].format(sigma=run.sigma)}\n"
                                            f"{when}minority test accuracy {minority_test:.2f}", fontsize="medium")


def save_figure_png(runs: dict[str, RunResult], path: str | os.PathLike, dpi: float = 100) -> None:
    """The paper's Figure 1: every run at the end of training, written atomically."""
    panels = RunPanels(runs, dpi)
    panels.show()
    save_png(panels.figure, path)


def save_training_gif(
    runs: dict[str, RunResult], path: str | os.PathLike, max_frames: int = 60, dpi: float = 52
) -> None:
    """An animation of every run's curves and boundary over training (at most ``max_frames``
    frames, denser early on, where the boundary moves fastest), written atomically."""
    epochs = max(len(run.accuracies) for run in runs.values()) - 1
    panels = RunPanels(runs, dpi)
    frames = []
    for epoch in frame_steps(list(range(epochs + 1)), max_frames):
        panels.show(epoch, with_epoch=True)
        frames.append(render(panels.figure))
        # Same elements in every frame: keep the first frame's layout instead of re-solving it.
        panels.figure.set_layout_engine("none")
    write_gif(frames, path)
