"""The arithmetic of benchmarks/table1_gpu_hours.py and benchmarks/evaluation_speed.py on given throughputs."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.evaluation_cost import RunSize
from benchmarks.evaluation_speed import EvaluationRates, mean_test_passes, run_evaluation_seconds, token_rows
from benchmarks.table1_gpu_hours import (NO_HOURS, PROTOCOLS, DatasetProtocol, Hours, Throughputs,
                                         mean_step_seconds, protocol_hours, quantile_lengths, read_throughputs,
                                         run_hours, table, throughputs_of_record, throughputs_record,
                                         training_measurement)

# 101 steps, evaluation every 50: steps 0, 50 and 100, 3 evaluations; 100 validation and 200 test examples
SIZE = RunSize("Tiny", 101, 50, 100, 200, 10)
RATES = EvaluationRates(streamed=100.0, prepared=300.0, preparation=0.01)
LINEAR = {16: 1.0, 32: 2.0, 64: 4.0}  # t(b) = b / 16 seconds per step
PROTOCOL = DatasetProtocol(SIZE, 1000, (4, 6), "civil", True, True)


def test_mean_step_seconds_of_the_log_uniform_batch_draw():
    # t linear: E[t(B)] = E[B] / 16, E[2^U(4, 6)] = (64 - 16) / (2 ln 2)
    assert mean_step_seconds(LINEAR, 4, 6) == pytest.approx(48 / (2 * math.log(2)) / 16, rel=1e-12)
    assert mean_step_seconds({16: 3.0, 32: 3.0, 64: 3.0}, 4, 6) == pytest.approx(3.0)
    # flat to 32, then 1 + (b - 32) / 16: half the draws cost 1, the others 1 + (32 / ln 2 - 32) / 16
    assert mean_step_seconds({16: 1.0, 32: 1.0, 64: 3.0}, 4, 6) == pytest.approx(1 / math.log(2), rel=1e-12)
    with pytest.raises(ValueError, match="must span 2"):
        mean_step_seconds({32: 1.0, 64: 2.0}, 4, 6)


def test_run_evaluation_seconds_before_and_after():
    before, after = run_evaluation_seconds(SIZE, tested=2, rates=RATES)
    assert before == pytest.approx(3 * 300 / 100)  # both splits at each of 3 evaluations, 100 a second
    assert after == pytest.approx(300 * 0.01 + (3 * 100 + 2 * 200) / 300)  # prepared once, 2 test passes


def test_run_hours_of_a_phase_2_and_a_phase_1_run():
    throughputs = Throughputs(LINEAR, {b: s / 2 for b, s in LINEAR.items()}, RATES)
    mean = 48 / (2 * math.log(2)) / 16
    phase_2 = run_hours(PROTOCOL, 2, throughputs, tested=2)
    assert phase_2.values() == pytest.approx((101 * mean / 3600, 101 * mean / 2 / 3600, 9 / 3600, (3 + 7 / 3) / 3600))
    phase_1 = run_hours(PROTOCOL, 1, throughputs, tested=2)  # twins: two networks; one pass over tr + va at the end
    assert phase_1.values() == pytest.approx((2 * 101 * mean / 3600, 101 * mean / 3600, 2 * 1100 / 100 / 3600,
                                              2 * 1100 * (0.01 + 1 / 300) / 3600))


def test_protocol_hours_count_the_runs_of_table_1():
    throughputs = Throughputs(LINEAR, LINEAR, RATES)
    rows = protocol_hours(PROTOCOL, throughputs, tested=2)
    one = run_hours(PROTOCOL, 2, throughputs, 2)
    assert list(rows) == ["XRM phase 1", "MAT", "GroupDRO", "ERM"]
    assert rows["XRM phase 1"].values() == pytest.approx(run_hours(PROTOCOL, 1, throughputs, 2).scaled(10).values())
    assert rows["MAT"].values() == pytest.approx(one.scaled(19).values())  # 10 combinations + 9 more seeds
    # two group-label folders before, one sweep serving both settings after
    assert rows["ERM"].values() == pytest.approx(one.scaled(38, 19).values())
    assert rows["ERM"].train_before == pytest.approx(2 * rows["ERM"].train_after)
    on_features = protocol_hours(PROTOCOLS[0], None, tested=2)  # Waterbirds: features in both phases
    assert all(hours == NO_HOURS for hours in on_features.values())
    images = {32: 1.0, 64: 2.0, 128: 4.0}
    celeba = protocol_hours(PROTOCOLS[1], Throughputs(images, images, RATES), tested=2)  # phase 1 on features
    assert celeba["XRM phase 1"] == NO_HOURS and celeba["MAT"].train_before > 0


def test_table_sums_rows_and_prints_the_ratio():
    rows = {"XRM phase 1": NO_HOURS, "MAT": Hours(1.0, 1.0, 3.0, 1.0), "GroupDRO": Hours(1.0, 0.5, 1.0, 0.5),
            "ERM": NO_HOURS}
    lines = table({"D": rows}).splitlines()
    assert lines[2].split() == ["D", "MAT", "1.00", "1.00", "3.00", "1.00", "4.00", "2.00", "0.500"]
    assert lines[5].split() == ["D", "all", "2.00", "1.50", "4.00", "1.50", "6.00", "3.00", "0.500"]
    assert lines[6].split()[:2] == ["Table", "1"] and lines[6].split()[-1] == "0.500"
    assert lines[1].split()[-1] == "-"  # no hours: no ratio


def test_a_training_measurement_name_is_registered_once():
    with pytest.raises(ValueError, match="'single-run' is registered already"):
        training_measurement("single-run")(lambda *args: 0.0)


def test_quantile_batches_and_token_rows():
    # quantiles 1/8, 3/8, 5/8, 7/8 sit at positions 0.875, 2.625, 4.375, 6.125 of 0 .. 7: nearest 1, 3, 4, 6
    assert quantile_lengths([1, 2, 3, 4, 5, 6, 7, 8], 4).tolist() == [2, 4, 5, 7]
    rows = token_rows([3, 5], 6, second_segment=[2, 4])
    assert rows.shape == (2, 6, 3)
    assert rows[..., 1].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]
    assert rows[..., 2].tolist() == [[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]]
    assert (rows[..., 0] == 0).tolist() == (rows[..., 1] == 0).tolist()  # ids only on real tokens


def test_xrm_twins_train_as_the_after_measurement_trains_runs_unless_a_record_says_otherwise(monkeypatch):
    """A stacked measurement's per-network step serves XRM's twins too (--stack_text_runs stacks them); a record of
    an earlier measurement whose twins kept today's step (``phase_1_after``) gives phase 1 that step."""
    from benchmarks import table1_gpu_hours as benchmark

    halved = {b: s / 2 for b, s in LINEAR.items()}
    monkeypatch.setattr(benchmark, "single_run_step", lambda network, x, *args: LINEAR[len(x)])
    monkeypatch.setitem(benchmark.TRAINING_MEASUREMENTS, "stacked-text", lambda network, x, *args: halved[len(x)])
    kind = benchmark.Kind(lambda: None, "adamw", lambda b: [0] * b, lambda: RATES)
    measured = benchmark.measure_kind(kind, (4, 6), "stacked-text", None, None)
    assert measured.phase_1_after is None and measured.step_after == halved
    phase_1, phase_2 = run_hours(PROTOCOL, 1, measured, tested=2), run_hours(PROTOCOL, 2, measured, tested=2)
    assert phase_1.train_after == pytest.approx(phase_1.train_before / 2)  # twins stacked: the same saving
    assert phase_2.train_after == pytest.approx(phase_2.train_before / 2)
    recorded = Throughputs(LINEAR, halved, RATES, phase_1_after=LINEAR)
    phase_1, phase_2 = run_hours(PROTOCOL, 1, recorded, tested=2), run_hours(PROTOCOL, 2, recorded, tested=2)
    assert phase_1.train_after == pytest.approx(phase_1.train_before)  # the twins were not stacked: no saving
    assert phase_2.train_after == pytest.approx(phase_2.train_before / 2)



MEASURED = Path(__file__).resolve().parents[1] / "benchmarks" / "measured"


def _table_1_hours(measured: dict[str, Throughputs]) -> Hours:
    """The whole protocol's hours from each kind's throughputs, as the benchmark sums them."""
    total = NO_HOURS
    for protocol in PROTOCOLS:
        kind = measured[protocol.kind] if protocol.phase_1_backbone or protocol.phase_2_backbone else None
        total = sum(protocol_hours(protocol, kind, mean_test_passes(protocol.size)).values(), total)
    return total


@pytest.mark.parametrize("name, after", [("h100_main_py.json", 80.29), ("h100_stacked_text.json", 84.14)])
def test_the_recorded_h100_throughputs_give_the_documented_gpu_hours(name, after):
    measured, record = read_throughputs(MEASURED / name)
    hours = _table_1_hours(measured)
    before_total, after_total = hours.train_before + hours.eval_before, hours.train_after + hours.eval_after
    assert before_total == pytest.approx(404.78, rel=1e-3)  # docs/engine.md (its rates rounded in the file)
    assert after_total == pytest.approx(after, abs=0.01)
    assert "H100" in record["machine"]


def test_a_record_reads_back_as_the_throughputs_it_was_written_from():
    measured = {name: Throughputs(LINEAR, {b: s / 2 for b, s in LINEAR.items()}, RATES,
                                  LINEAR if name == "civil" else None) for name in ("image", "multinli", "civil")}
    again = throughputs_of_record(json.loads(json.dumps(throughputs_record(measured, "here", "main.py"))))
    for name, throughputs in measured.items():
        assert again[name].step_before == pytest.approx(throughputs.step_before, rel=1e-12)
        assert again[name].step_after == pytest.approx(throughputs.step_after, rel=1e-12)
        assert (again[name].phase_1_after is None) == (throughputs.phase_1_after is None)
        assert again[name].evaluation.preparation == pytest.approx(RATES.preparation, rel=1e-12)


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it"),
    ("{not json", "not a record written by --save (JSONDecodeError"),
    ('{"machine": "m", "after_training": "x", "kinds": {}}', "not a record written by --save (KeyError: 'image')"),
])
def test_from_a_bad_record_is_one_line(tmp_path, content, message):
    path = tmp_path / "record.json"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([sys.executable, "benchmarks/table1_gpu_hours.py", "--from", str(path)],
                            cwd=MEASURED.parents[1], capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"error: --from {path}: {message}"), lines
