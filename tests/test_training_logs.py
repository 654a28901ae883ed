"""What training shows and records for a researcher: one log line per evaluation off a terminal
(XRM/runs/progress.py), training loss, learning rate and throughput in every record, and the provenance of
each run in its header, in read_results and in the DataFrame."""
import json
import re
from datetime import datetime

import pytest

import XRM
from XRM.runs.progress import format_duration, summarise


@pytest.fixture(scope="module")
def phase_1(tmp_path_factory):
    from conftest import run_script

    out = tmp_path_factory.mktemp("logs") / "out"
    result = run_script("main.py", "--phase", "1", "--datasets", "Synthetic", "--num_hparams_combs", "2",
                        "--out_dir", str(out), "--hparams", '{"num_steps": 61, "eval_every": 20}', "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_off_a_terminal_each_evaluation_is_one_log_line(phase_1):
    _, stdout = phase_1
    lines = [line for line in stdout.splitlines() if line.startswith("stack of 2 runs: step ")]
    assert [int(re.search(r"step (\d+)/61", line).group(1)) for line in lines] == [1, 21, 41, 61]
    pattern = (r"stack of 2 runs: step \d+/61, flip_rate mean [0-9.]+ \[[0-9.]+, [0-9.]+\] over 2 runs, "
               r"[0-9.]+ steps/s, \d+:\d\d left")
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[-1].endswith(" 0:00 left")


def test_the_header_records_where_and_with_what_the_run_trained(phase_1):
    import torch

    out, _ = phase_1
    results = out / "XRM" / "Synthetic" / "group_labels_no" / "results_hpcomb_1_seed0.json"
    provenance = json.loads(results.read_text().splitlines()[0])["provenance"]
    assert provenance["device_used"].startswith("cpu") and provenance["torch"] == torch.__version__
    assert provenance["toolkit"] == XRM.__version__
    assert provenance["commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", provenance["commit"])
    assert datetime.fromisoformat(provenance["started"]).tzinfo is not None
    assert set(provenance) == {"device_used", "torch", "cuda", "python", "toolkit", "commit", "host", "started"}


def test_read_results_and_the_dataframe_show_the_provenance(phase_1, script):
    from XRM.results.frame import load_records

    out, _ = phase_1
    table = script("XRM/read_results.py", "--dir", str(out)).stdout
    assert re.search(rf"^trained on cpu \(\w+\) with torch \S+, toolkit {re.escape(XRM.__version__)}", table, re.M)
    frame = load_records(out)
    assert frame.toolkit.unique().tolist() == [XRM.__version__] and frame.device_used.str.startswith("cpu").all()
    assert frame.train_loss.notna().all() and (frame.train_loss > 0).all() and frame.lr.notna().all()
    # the throughput columns: positive everywhere, examples per second the batch size times steps per second
    batch_sizes = frame.hpcomb.map({comb: json.loads((out / "XRM" / "Synthetic" / "group_labels_no" /
                                                      f"results_hpcomb_{comb}_seed0.json").read_text().splitlines()[0])
                                    ["hparams"]["batch_size"] for comb in (0, 1)})
    assert (frame.steps_per_s > 0).all() and (frame.examples_per_s == frame.steps_per_s * batch_sizes).all()


def test_the_summaries_of_a_log_line():
    assert summarise("va_wga", [0.8125]) == "va_wga 0.812"
    assert summarise("va_wga", [0.5, float("nan"), 0.75]) == "va_wga mean 0.625 [0.500, 0.750] over 2 runs"
    assert summarise("flip_rate", []) == "flip_rate -"
    assert [format_duration(s) for s in (0, 59.6, 61, 3725, float("inf"))] == ["0:00", "1:00", "1:01", "1:02:05", "?"]
