"""GPU-hours of the paper's whole Table 1 protocol on its four datasets, training and evaluation apart,
before and after, computed from throughputs measured on the machine it runs on.

python benchmarks/table1_gpu_hours.py --scale 0.25           # on a GPU (ResNet-50, BERT-base, random weights)
python benchmarks/table1_gpu_hours.py --quick                 # a smoke test on a CPU (tiny models, tiny splits)
python benchmarks/table1_gpu_hours.py --from benchmarks/measured/h100_main_py.json   # recorded throughputs

The protocol (reproduce.py; PAPER_FACTS.md, "Training protocol"): per dataset, XRM phase 1 with 10
hyper-parameter combinations; then MAT (one group-label folder), GroupDRO (one) and ERM (before: two,
true and inferred groups; after: one, whose runs record both settings' criteria), 10 combinations each,
then 9 more seeds of the selected combination per folder (a lower bound: where a folder's two settings
select different combinations, 9 more). Steps, evaluation
cadence, batch-size draws and split sizes are the paper's; Waterbirds trains on precomputed features in
both phases and CelebA in phase 1 (seconds on a GPU: counted as 0 here). Text datasets train BERT in
both phases; XRM's twins cost two networks' steps, and phase 1 ends with one pass of both twins over
the training and validation splits.

Measured (each once, on this machine):
- training: seconds per step of one run at the batch sizes 2^lo, 2^(lo+1), 2^hi of the draw
  (images 32, 64, 128; text 16, 32, 64) through our training step (benchmarks/backbone_step.py's
  time_steps: ModuleStack, ERM, the family's optimiser, bf16 and channels_last on CUDA, CUDA graphs
  for packed BERT as main.py trains), on uint8 images already on the device or a batch of token rows
  whose lengths are the dataset's length quantiles. "Before" uses the single-run step with a ResNet's
  kernels launched one by one; "after" uses the measurement named by --after_training (default
  main.py's step: the ResNet's passes replayed from CUDA graphs; ``stacked-text``: text runs trained
  8 to a stack; ``stacked-text-graphs``: the same, replayed from CUDA graphs; other steps plug in through
  TRAINING_MEASUREMENTS);
- evaluation: benchmarks/evaluation_speed.py's rates (today's streamed pass; the prepared pass and its
  one-off preparation) on generated CelebA-sized images, MultiNLI-like and CivilComments-like rows.

The formula (docs/engine.md, "GPU-hours of Table 1"): see run_hours.
"""
import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from benchmarks.backbone_step import image_model, text_model, time_steps, timed  # noqa: E402
from benchmarks.evaluation_cost import RunSize  # noqa: E402
from benchmarks.evaluation_speed import (EvaluationRates, device_line, image_rates,  # noqa: E402
                                         mean_test_passes, measurement_options, multinli_like_tokens, parsed,
                                         run_evaluation_seconds, scaled, text_rates, token_rows)
from benchmarks.text_training import MAX_LENGTH, civilcomments_like_lengths  # noqa: E402
from XRM.common.devices import resolve_device  # noqa: E402
from XRM.engine.text_stack import TextStack  # noqa: E402
from XRM.networks.classifiers import TextClassifier, use_cuda_graphs  # noqa: E402
from XRM.networks.token_batches import TokenBatch  # noqa: E402

PHASE_1_RUNS = 10
COMBINATIONS, MORE_SEEDS = 10, 9
#: phase-2 algorithms with their group-label folders in Table 1's two settings (reproduce.py), before and after:
#: ERM was trained in two folders, one per setting; now one sweep serves both (docs/protocol.md)
PHASE_2_FOLDERS = {"MAT": (1, 1), "GroupDRO": (1, 1), "ERM": (2, 1)}


@dataclass(frozen=True)
class DatasetProtocol:
    """One dataset of Table 1: its run size (steps, cadence, validation and test sizes), training-split size,
    batch-size draw 2^U(low, high), and which phases fine-tune a backbone (``kind``: image, multinli, civil)."""

    size: RunSize
    train: int
    batch_exponents: tuple[int, int]
    kind: str
    phase_1_backbone: bool
    phase_2_backbone: bool


# Split sizes: the XRM paper's datasets (WILDS for CivilComments); smallest validation groups (for the
# simulated selection curves): CelebA's and MultiNLI's as in benchmarks/evaluation_cost.py, CivilComments'
# and Waterbirds' assumed.
PROTOCOLS = (
    DatasetProtocol(RunSize("Waterbirds", 1001, 50, 1199, 5794, 133), 4795, (5, 7), "image", False, False),
    DatasetProtocol(RunSize("CelebA", 10001, 50, 19867, 19962, 182), 162770, (5, 7), "image", False, True),
    DatasetProtocol(RunSize("MultiNLI", 60001, 250, 82462, 123712, 1000), 206175, (4, 6), "multinli", True, True),
    DatasetProtocol(RunSize("CivilComments", 60001, 250, 45180, 133782, 500), 269038, (4, 6), "civil", True, True),
)


def mean_step_seconds(seconds_at: dict[int, float], low: int, high: int) -> float:
    """E[t(B)], B = 2^U(low, high): t is the line through the measured seconds per step of consecutive batch
    sizes in ``seconds_at`` (2^low, ..., 2^high), and on each piece [b, b'] the draw's mean batch is
    (b' - b) / (ln b' - ln b), with probability log2(b'/b) / (high - low). (The reference's int() cut of
    2^U lowers the mean batch by under one example: left out.)"""
    sizes = sorted(seconds_at)
    if sizes[0] != 2 ** low or sizes[-1] != 2 ** high:
        raise ValueError(f"measured batch sizes {sizes} must span 2^{low} .. 2^{high}")
    total = 0.0
    for small, large in zip(sizes, sizes[1:]):
        mean_batch = (large - small) / math.log(large / small)
        slope = (seconds_at[large] - seconds_at[small]) / (large - small)
        total += math.log2(large / small) / (high - low) * (seconds_at[small] + slope * (mean_batch - small))
    return total


@dataclass(frozen=True)
class Throughputs:
    """What one kind of dataset needs measured: seconds per step of one run at each batch size, before and
    after, and the evaluation rates."""

    step_before: dict[int, float]
    step_after: dict[int, float]
    evaluation: EvaluationRates
    phase_1_after: dict[int, float] | None = None  # XRM's twins, where "after" trains them otherwise than step_after


@dataclass(frozen=True)
class Hours:
    """GPU-hours of a group of runs: training and evaluation, before and after."""

    train_before: float
    train_after: float
    eval_before: float
    eval_after: float

    def __add__(self, other: "Hours") -> "Hours":
        return Hours(*(a + b for a, b in zip(self.values(), other.values())))

    def scaled(self, runs: float, runs_after: float | None = None) -> "Hours":
        """The hours of ``runs`` such groups (after: ``runs_after`` of them, where it is given)."""
        after = runs if runs_after is None else runs_after
        return Hours(runs * self.train_before, after * self.train_after,
                     runs * self.eval_before, after * self.eval_after)

    def values(self) -> tuple[float, float, float, float]:
        """(train_before, train_after, eval_before, eval_after)."""
        return self.train_before, self.train_after, self.eval_before, self.eval_after


NO_HOURS = Hours(0.0, 0.0, 0.0, 0.0)


def run_hours(protocol: DatasetProtocol, phase: int, throughputs: Throughputs, tested: float) -> Hours:
    """GPU-hours of one run:

    training = S x m x E[t(B)] (S steps, m networks: 2 for XRM's twins, t from :func:`mean_step_seconds`;
    after, phase 1: ``phase_1_after`` where recorded throughputs say the twins trained otherwise than the other
    runs: the stacked measurements of an earlier version, which stacked no twins);
    evaluation, phase 2 = :func:`benchmarks.evaluation_speed.run_evaluation_seconds`: before
    E x (V + T) / r_streamed; after (V + T) x p + (E x V + tested x T) / r_prepared (E evaluations, V and T
    the validation and test sizes, p the preparation's seconds per example); phase 1 = one pass of the
    m networks over the training and validation splits at the end: m x (N + V) / r (after: plus m x (N + V) x p,
    an upper bound: the twins share the prepared inputs).
    """
    size, (low, high) = protocol.size, protocol.batch_exponents
    networks = 2 if phase == 1 else 1
    train_before = size.num_steps * networks * mean_step_seconds(throughputs.step_before, low, high)
    after = throughputs.phase_1_after if phase == 1 and throughputs.phase_1_after else throughputs.step_after
    train_after = size.num_steps * networks * mean_step_seconds(after, low, high)
    rates = throughputs.evaluation
    if phase == 1:
        examples = networks * (protocol.train + size.validation)
        eval_before, eval_after = examples / rates.streamed, examples * (rates.preparation + 1 / rates.prepared)
    else:
        eval_before, eval_after = run_evaluation_seconds(size, tested, rates)
    return Hours(train_before / 3600, train_after / 3600, eval_before / 3600, eval_after / 3600)


def protocol_hours(protocol: DatasetProtocol, throughputs: Throughputs | None, tested: float) -> dict[str, Hours]:
    """Each row's GPU-hours for one dataset: "XRM phase 1" and each phase-2 algorithm (all its folders' runs);
    zero where the runs train on precomputed features."""
    rows = {"XRM phase 1": NO_HOURS}
    if throughputs is not None and protocol.phase_1_backbone:
        rows["XRM phase 1"] = run_hours(protocol, 1, throughputs, tested).scaled(PHASE_1_RUNS)
    for algorithm, (folders_before, folders_after) in PHASE_2_FOLDERS.items():
        runs = COMBINATIONS + MORE_SEEDS
        backbone = throughputs is not None and protocol.phase_2_backbone
        one_run = run_hours(protocol, 2, throughputs, tested) if backbone else NO_HOURS
        rows[algorithm] = one_run.scaled(folders_before * runs, folders_after * runs)
    return rows


# ---------------------------------------------------------------- measurements

@dataclass(frozen=True)
class Effort:
    """How long each training measurement runs: steps timed after warm-up steps."""

    steps: int
    warmup: int


FULL, QUICK = Effort(30, 10), Effort(2, 1)

#: name -> (network factory, a batch on the device, optimiser, device, effort) -> seconds per step of ONE run
TrainingMeasurement = Callable[[Callable[[], torch.nn.Module], torch.Tensor, str, torch.device, Effort], float]
TRAINING_MEASUREMENTS: dict[str, TrainingMeasurement] = {}


def training_measurement(name: str) -> Callable[[TrainingMeasurement], TrainingMeasurement]:
    """Register a way to measure the "after" training step under ``name`` (a stacked step divides its
    step's seconds by the runs it trains)."""
    def register(function: TrainingMeasurement) -> TrainingMeasurement:
        if name in TRAINING_MEASUREMENTS:
            raise ValueError(f"training measurement {name!r} is registered already")
        TRAINING_MEASUREMENTS[name] = function
        return function
    return register


def one_run_step(network: Callable[[], torch.nn.Module], x: torch.Tensor, optimizer: str, device: torch.device,
                 effort: Effort, graphed_images: bool) -> float:
    """Seconds per training step of one run (benchmarks/backbone_step.py's time_steps): on CUDA a packed
    BERT's passes replayed from CUDA graphs, and with ``graphed_images`` a ResNet's too (captured for
    ``x``'s shape)."""
    model = network().to(device)
    if device.type == "cuda":
        use_cuda_graphs(model, tuple(x.shape) if graphed_images else None)
    return time_steps(model, x, optimizer, 1e-5, effort.steps, effort.warmup, device)


@training_measurement("single-run")
def single_run_step(network: Callable[[], torch.nn.Module], x: torch.Tensor, optimizer: str,
                    device: torch.device, effort: Effort) -> float:
    """The training step of one run before the ResNet's passes were captured (a ResNet's kernels launched
    one by one; CUDA graphs for packed BERT)."""
    return one_run_step(network, x, optimizer, device, effort, graphed_images=False)


@training_measurement("main.py")
def default_step(network: Callable[[], torch.nn.Module], x: torch.Tensor, optimizer: str,
                 device: torch.device, effort: Effort) -> float:
    """One run's training step as main.py trains it by default: CUDA graphs for packed BERT, and a ResNet's
    passes captured for the batch's shape, on CUDA."""
    return one_run_step(network, x, optimizer, device, effort, graphed_images=True)


#: runs a stacked text step trains at once (``--after_training stacked-text``): a sweep's 10
#: combinations fit an H100 as stacks of this many at batch 32 (25.8 GiB measured for 8)
STACKED_TEXT_RUNS = 8


def stacked_text_seconds(network: Callable[[], torch.nn.Module], x: torch.Tensor, optimizer: str,
                         device: torch.device, effort: Effort, cuda_graphs: bool) -> float:
    """Text: the seconds per step of ``STACKED_TEXT_RUNS`` runs trained as one stack (XRM/engine/text_stack.py,
    each run on the batch ``x``, its own dropout; main.py's --stack_text_runs; ``cuda_graphs``: its pass replayed
    from CUDA graphs), divided by the runs; images: main.py's default step."""
    first = network()
    if not isinstance(first, TextClassifier):
        return default_step(lambda: first, x, optimizer, device, effort)
    models = [first, *(network() for _ in range(STACKED_TEXT_RUNS - 1))]
    hparams = {"optimizer": optimizer, "lr": 1e-5, "weight_decay": 1e-4, "num_steps": effort.warmup + effort.steps}
    stack = TextStack(models, [hparams] * len(models), list(range(len(models))), device, cuda_graphs=cuda_graphs)
    batch = TokenBatch.measured(x)
    labels = torch.randint(0, 2, (len(x),), device=device)

    def step() -> None:
        logits = stack.forward([batch] * len(models))
        stack.step(sum(F.cross_entropy(logits[run, : len(x)], labels) for run in range(len(models))))

    return timed(step, effort.steps, effort.warmup, device) / len(models)


@training_measurement("stacked-text")
def stacked_text_step(network: Callable[[], torch.nn.Module], x: torch.Tensor, optimizer: str,
                      device: torch.device, effort: Effort) -> float:
    """Text runs trained 8 to a stack, eager passes (as main.py's --stack_text_runs trains them)."""
    return stacked_text_seconds(network, x, optimizer, device, effort, cuda_graphs=False)


@training_measurement("stacked-text-graphs")
def stacked_text_graphs_step(network: Callable[[], torch.nn.Module], x: torch.Tensor, optimizer: str,
                             device: torch.device, effort: Effort) -> float:
    """Text runs trained 8 to a stack, the pass replayed from CUDA graphs (XRM/networks/stacked_bert_graphs.py;
    the same batch at every step: one layout, captured in the warm-up steps)."""
    return stacked_text_seconds(network, x, optimizer, device, effort, cuda_graphs=True)


def quantile_lengths(lengths: np.ndarray, count: int) -> np.ndarray:
    """``count`` lengths at the distribution's quantiles (i + 1/2) / count: a batch of typical texts."""
    return np.quantile(lengths, (np.arange(count) + 0.5) / count, method="nearest").astype(np.int64)


@dataclass(frozen=True)
class Kind:
    """How to measure one kind of dataset: its network, optimiser, a training batch of a size, and its
    evaluation rates."""

    network: Callable[[], torch.nn.Module]
    optimizer: str
    batch: Callable[[int], torch.Tensor]
    evaluation: Callable[[], EvaluationRates]


def kinds(device: torch.device, scale: float, tiny: bool, num_workers: int) -> dict[str, Kind]:
    """The measurements of the image, MultiNLI-like and CivilComments-like kinds (``tiny``: small models and
    32-pixel training images, for a check on a CPU)."""
    pixels = 32 if tiny else 224
    civil = civilcomments_like_lengths(scaled(45180 + 133782, scale))
    multinli = multinli_like_tokens(scaled(82462 + 123712, scale))
    multinli_lengths = multinli[..., 1].sum(dim=1).numpy()
    celeba = PROTOCOLS[1].size
    return {
        "image": Kind(lambda: image_model(tiny), "sgd",
                      lambda b: torch.randint(0, 256, (b, 3, pixels, pixels), dtype=torch.uint8, device=device),
                      lambda: image_rates(device, scaled(celeba.validation + celeba.test, scale), num_workers, tiny)),
        "multinli": Kind(lambda: text_model(tiny), "adamw",
                         lambda b: token_rows(quantile_lengths(multinli_lengths, b), 128).to(device),
                         lambda: text_rates(device, multinli, tiny)),
        "civil": Kind(lambda: text_model(tiny), "adamw",
                      lambda b: token_rows(quantile_lengths(civil, b), MAX_LENGTH).to(device),
                      lambda: text_rates(device, token_rows(civil, MAX_LENGTH), tiny)),
    }


def measure_kind(kind: Kind, exponents: tuple[int, int], after: str, device: torch.device,
                 effort: Effort) -> Throughputs:
    """Seconds per step at each batch size 2^low .. 2^high, before (single run) and after, and the evaluation rates."""
    sizes = [2 ** e for e in range(exponents[0], exponents[1] + 1)]
    before = {b: single_run_step(kind.network, kind.batch(b), kind.optimizer, device, effort) for b in sizes}
    measured = before if after == "single-run" else {
        b: TRAINING_MEASUREMENTS[after](kind.network, kind.batch(b), kind.optimizer, device, effort) for b in sizes}
    # XRM's twins train as the measurement trains a run's networks (--stack_text_runs stacks twins too)
    return Throughputs(before, measured, kind.evaluation())


# ---------------------------------------------------------------- recorded throughputs

def throughputs_record(measured: dict[str, Throughputs], machine: str, after_training: str) -> dict:
    """``measured`` (kind -> Throughputs) as JSON: per kind, examples a second of one run at each batch size
    (training before, after, and XRM's twins after where they train otherwise) and the evaluation rates."""
    def examples_per_second(seconds: dict[int, float] | None) -> dict[str, float] | None:
        return None if seconds is None else {str(b): b / s for b, s in seconds.items()}

    return {"machine": machine, "after_training": after_training, "kinds": {
        name: {"training_before": examples_per_second(t.step_before),
               "training_after": examples_per_second(t.step_after),
               "phase_1_after": examples_per_second(t.phase_1_after),
               "evaluation": {"streamed": t.evaluation.streamed, "prepared": t.evaluation.prepared,
                              "preparation_ms": t.evaluation.preparation * 1e3}}
        for name, t in measured.items()}}


def throughputs_of_record(record: dict) -> dict[str, Throughputs]:
    """:func:`throughputs_record`'s JSON back as kind -> Throughputs (a KeyError, TypeError or ValueError
    where it is not such a record)."""
    def seconds(rates: dict[str, float] | None) -> dict[int, float] | None:
        if rates is None:
            return None
        if not all(float(rate) > 0 for rate in rates.values()):
            raise ValueError("a rate is not a positive number")
        return {int(b): int(b) / float(rate) for b, rate in rates.items()}

    measured = {}
    for name in ("image", "multinli", "civil"):
        kind = record["kinds"][name]
        rates = kind["evaluation"]
        measured[name] = Throughputs(seconds(kind["training_before"]), seconds(kind["training_after"]),
                                     EvaluationRates(float(rates["streamed"]), float(rates["prepared"]),
                                                     float(rates["preparation_ms"]) / 1e3),
                                     seconds(kind.get("phase_1_after")))
    return measured


def read_throughputs(path: Path) -> tuple[dict[str, Throughputs], dict]:
    """The throughputs recorded in ``path`` and the record; a ValueError whose message says what is wrong."""
    try:
        record = json.loads(path.read_text())
        return throughputs_of_record(record), record
    except OSError as error:
        raise ValueError(f"cannot read it ({error.strerror or error})") from error
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"not a record written by --save ({type(error).__name__}: {error})") from error


# ---------------------------------------------------------------- the table

def table(hours: dict[str, dict[str, Hours]]) -> str:
    """The GPU-hours table: dataset x row, training and evaluation before / after, totals and ratios."""
    lines = [f"{'dataset':<14}{'row':<12}{'train before':>13}{'train after':>12}{'eval before':>12}"
             f"{'eval after':>11}{'total before':>13}{'total after':>12}{'ratio':>7}"]

    def line(name: str, row: str, h: Hours) -> str:
        before, after = h.train_before + h.eval_before, h.train_after + h.eval_after
        ratio = f"{after / before:.3f}" if before else "-"
        return (f"{name:<14}{row:<12}{h.train_before:13.2f}{h.train_after:12.2f}{h.eval_before:12.2f}"
                f"{h.eval_after:11.2f}{before:13.2f}{after:12.2f}{ratio:>7}")

    overall = NO_HOURS
    for dataset, rows in hours.items():
        for row, h in rows.items():
            lines.append(line(dataset, row, h))
        total = sum(rows.values(), NO_HOURS)
        lines.append(line(dataset, "all", total))
        overall = overall + total
    lines.append(line("Table 1", "all", overall))
    return "\n".join(lines)


def main() -> int:
    """Measure the throughputs, print them and the GPU-hours table; 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[measurement_options(0.25)])
    parser.add_argument("--after_training", default="main.py", choices=sorted(TRAINING_MEASUREMENTS),
                        help="how the 'after' training step is measured (default: main.py's default step, "
                        "ResNet passes captured as CUDA graphs; stacked-text: text runs stacked 8 at a time)")
    parser.add_argument("--quick", action="store_true", help="tiny models, 0.0005 of the splits, 2 timed steps, "
                        "on the CPU unless --device says otherwise: checks the script, not the GPU-hours")
    parser.add_argument("--save", type=Path, metavar="JSON", help="also write the measured throughputs to this file")
    parser.add_argument("--from", dest="recorded", type=Path, metavar="JSON", help="measure nothing: the table from "
                        "throughputs a --save wrote (e.g. benchmarks/measured/*.json)")
    args = parsed(parser)
    if args.recorded is not None:
        try:
            measured, record = read_throughputs(args.recorded)
        except ValueError as error:
            print(f"error: --from {args.recorded}: {error}", file=sys.stderr)
            return 2
        print(f"throughputs recorded in {args.recorded}: {record['machine']}; after-training measurement: "
              f"{record['after_training']}")
        print_hours(measured)
        return 0
    if args.quick:
        args.scale, args.num_workers = 0.0005, min(args.num_workers, 2)
        args.device = "cpu" if args.device == "auto" else args.device
    device = resolve_device(args.device)
    print(f"{device_line(device)}; evaluation splits at {args.scale:g} of their sizes, rates extrapolated linearly; "
          f"after-training measurement: {args.after_training}" + ("; QUICK: tiny models" if args.quick else ""))
    measured = {}
    for name, kind in kinds(device, args.scale, args.quick, args.num_workers).items():
        exponents = (5, 7) if name == "image" else (4, 6)
        measured[name] = throughputs = measure_kind(kind, exponents, args.after_training, device,
                                                    QUICK if args.quick else FULL)
        steps = ", ".join(f"batch {b}: {b / s:,.0f}/{b / throughputs.step_after[b]:,.0f} examples/s"
                          for b, s in throughputs.step_before.items())
        rates = throughputs.evaluation
        print(f"{name}: training before/after {steps}; evaluation today {rates.streamed:,.0f}/s, prepared "
              f"{rates.prepared:,.0f}/s (+{rates.preparation * 1e3:.3f} ms per example once)", flush=True)
    if args.save is not None:
        args.save.write_text(json.dumps(throughputs_record(measured, device_line(device), args.after_training),
                                        indent=1) + "\n")
    print_hours(measured)
    return 0


def print_hours(measured: dict[str, Throughputs]) -> None:
    """Print the GPU-hours table of Table 1's protocol from the throughputs of each kind."""
    hours = {p.size.name: protocol_hours(p, measured[p.kind] if p.phase_1_backbone or p.phase_2_backbone else None,
                                         mean_test_passes(p.size)) for p in PROTOCOLS}
    print("GPU-hours (runs on precomputed features: 0)")
    print(table(hours))


if __name__ == "__main__":
    raise SystemExit(main())
