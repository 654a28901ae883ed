"""XRM/results/figure_files.py: frame selection and the GIF and PNG writers."""
import pytest
from PIL import Image

from XRM.results.figure_files import frame_steps, new_figure, save_png, write_gif


def test_frame_steps_spaces_frames_evenly_in_sqrt_of_the_step():
    squares = [k * k for k in range(11)]  # sqrt: 0, 1, ..., 10
    assert frame_steps(squares, 6) == [0, 4, 16, 36, 64, 100]


def test_frame_steps_never_repeats_a_step_and_keeps_room_for_the_rest():
    # sqrt spacing asks for 0, 33.3^2, 66.7^2, 10000: the middle two fall on the last step,
    # so they move back to the latest distinct steps that still leave room.
    assert frame_steps([0, 100, 101, 102, 103, 10000], 4) == [0, 102, 103, 10000]


def test_frame_steps_keeps_short_lists_and_rejects_fewer_than_two_frames():
    assert frame_steps([0, 5, 9], 60) == [0, 5, 9]
    with pytest.raises(ValueError, match="max_count is 1"):
        frame_steps([0, 5, 9], 1)


def test_write_gif_loops_over_every_frame_and_holds_the_last(tmp_path):
    colours = ["red", "green", "blue"]
    frames = [Image.new("RGB", (20, 10), colour) for colour in colours]
    write_gif(frames, tmp_path / "a.gif", frame_ms=100, last_frame_ms=900)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 3 and gif.info["loop"] == 0
        durations, pixels = [], []
        for index in range(3):
            gif.seek(index)
            durations.append(gif.info["duration"])
            pixels.append(gif.convert("RGB").getpixel((5, 5)))
    assert durations == [100, 100, 900]
    assert pixels == [(255, 0, 0), (0, 128, 0), (0, 0, 255)]
    assert [path.name for path in tmp_path.iterdir()] == ["a.gif"]  # no temporary left


def test_save_png_writes_the_figure_at_its_size(tmp_path):
    figure = new_figure(4, 2, dpi=50)
    figure.add_subplot().plot([0, 1], [0, 1])
    save_png(figure, tmp_path / "f.png")
    with Image.open(tmp_path / "f.png") as png:
        assert png.size == (200, 100)


def test_group_bars_are_the_mean_and_std_over_seeds_and_named_by_the_header():
    from pathlib import Path

    from XRM.results.collect import RunResult, summarize
    from XRM.results.plots import group_label, seed_spread
    from XRM.results.records import RunFiles
    from XRM.results.table1 import TableCell

    def run(seed, group_0, group_1):
        record = {"step": 50, "va_wga": 0.5, "te_wga": min(group_0, group_1), "te_avg_acc": 0.9,
                  "te_acc_group_0": group_0, "te_acc_group_1": group_1}
        return RunResult(0, seed, {"test_groups": {"0": {"y": 0, "a": 0, "n": 40, "label": "landbird",
                                                         "attribute": "land"}}},
                         [{**record, "step": 0}, record], RunFiles(Path("/nowhere"), 0, seed))

    runs = [run(0, 0.5, 1.0), run(1, 0.7, 1.0)]
    cell = TableCell("D", "ERM", "va_wga", Path("/nowhere"), summarize(runs, "va_wga"))
    spread = seed_spread(cell)
    assert spread[0] == (pytest.approx(60.0), pytest.approx(10.0), 2) and spread[1] == (100.0, 0.0, 2)
    table = runs[0].header["test_groups"]
    assert group_label(0, table) == "landbird\nland\nn=40" and group_label(1, table) == "group 1"
