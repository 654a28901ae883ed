"""Figure output shared by the figure scripts: PNG and animated GIF files, written atomically.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so nothing depends on
a display or on pyplot's global state, and an animation redraws one figure per frame.
"""
import io
import math
import os
from bisect import bisect_left
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from XRM.common.fileio import atomic_write_bytes, atomic_write_json


def new_figure(width: float, height: float, dpi: float) -> Figure:
    """A figure of ``width`` x ``height`` inches with an Agg canvas and a constrained layout."""
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | os.PathLike) -> None:
    """Render ``figure`` to PNG in memory, then write it atomically to ``path``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(buffer.getvalue(), path)


def render(figure: Figure) -> Image.Image:
    """The figure as it looks now, as an RGB image (one frame of an animation)."""
    canvas = figure.canvas
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def write_gif(
    frames: Sequence[Image.Image],
    path: str | os.PathLike,
    frame_ms: int = 120,
    last_frame_ms: int = 2000,
    colors: int = 64,
) -> None:
    """Write ``frames`` as a looping animated GIF, atomically; the last frame is held longer.

    Every frame is mapped to one palette of ``colors`` built from all the frames together:
    plots use few colours, and a shared palette keeps them from flickering between frames.
    """
    if not frames:
        raise ValueError("write_gif needs at least one frame")
    width, height = frames[0].size
    montage = Image.new("RGB", (width, height * len(frames)))
    for index, frame in enumerate(frames):
        montage.paste(frame, (0, height * index))
    palette = montage.quantize(colors=colors)
    # No dithering: it would speckle flat colours and thin lines, and bloat the file.
    indexed = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
    durations = [frame_ms] * (len(indexed) - 1) + [last_frame_ms]
    buffer = io.BytesIO()
    indexed[0].save(buffer, format="GIF", save_all=True, append_images=indexed[1:],
                    duration=durations, loop=0)
    atomic_write_bytes(buffer.getvalue(), path)


def frame_steps(steps: Sequence[int], max_count: int) -> list[int]:
    """``max_count`` of the sorted, distinct, non-negative ``steps`` (all of them if fewer)
    for an animation, spaced evenly in sqrt(step), always with the first and the last.

    Training changes fastest at the start, so early steps are shown more densely, without
    starving the end as log spacing would; where the spacing asks for one recorded step
    twice, the next recorded one is taken.
    """
    if max_count < 2:
        raise ValueError(f"max_count is {max_count}: keeping the first and last steps needs 2")
    if len(steps) <= max_count:
        return list(steps)
    roots = [math.sqrt(step) for step in steps]
    chosen: list[int] = []
    for k in range(max_count):
        wanted = roots[0] + (roots[-1] - roots[0]) * k / (max_count - 1)
        position = bisect_left(roots, wanted)  # the first step at or after the wanted point
        # Strictly after the previous choice, and leaving a step for each later frame.
        earliest = chosen[-1] + 1 if chosen else 0
        latest = len(steps) - (max_count - k)
        chosen.append(min(max(position, earliest), latest))
    return [steps[position] for position in chosen]


def write_figure_outputs(
    out_dir: Path, stem: str, metrics: dict, save_figure: Callable[[Path], None], save_animation: Callable[[Path], None] | None
) -> None:
    """A figure script's outputs in ``out_dir``: metrics.json, ``<stem>.png`` and, unless skipped, ``<stem>.gif``."""
    atomic_write_json(metrics, out_dir / "metrics.json")
    save_figure(out_dir / f"{stem}.png")
    if save_animation is not None:
        save_animation(out_dir / f"{stem}.gif")
