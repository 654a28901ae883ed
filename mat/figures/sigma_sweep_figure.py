"""The sigma sweep's figure: minority (and majority) test accuracy of ERM and MAT against sigma."""
import os

from XRM.results.figure_files import new_figure, save_png

ALGORITHM_COLOURS = {"ERM": "#C8321E", "MAT": "#2F6DB5"}


def save_sigma_sweep_png(sweep: dict[str, list[dict[str, float]]], path: str | os.PathLike, dpi: float = 120) -> None:
    """Plot run_sigma_sweep's result: minority test accuracy (solid), majority (dotted) per algorithm."""
    figure = new_figure(7.4, 3.6, dpi)
    axis = figure.subplots()
    for algorithm, entries in sweep.items():
        points = sorted((entry["sigma"], entry["min_te"], entry["maj_te"]) for entry in entries)
        sigmas = [p[0] for p in points]
        colour = ALGORITHM_COLOURS.get(algorithm)
        axis.plot(sigmas, [p[1] for p in points], marker="o", color=colour, label=f"{algorithm}, minority test")
        axis.plot(sigmas, [p[2] for p in points], linestyle=":", marker=".", color=colour,
                  label=f"{algorithm}, majority test")
    axis.set(xlabel="σ (scale of the example-specific noise)", ylabel="test accuracy", ylim=(-0.03, 1.03),
             title="Figure 1's runs against σ")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    save_png(figure, path)
