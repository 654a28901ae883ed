"""Evaluation of a backbone run, today's pass against the prepared one, and a whole run's evaluation time.

python benchmarks/evaluation_speed.py --scale 0.5                  # on a GPU: CelebA- and MultiNLI-sized
python benchmarks/evaluation_speed.py --device cpu --tiny --scale 0.005   # a quick check that it runs

Two runs' validation and test splits, generated at ``--scale`` times their real sizes:

- CelebA: 19,867 + 19,962 generated 178x218 JPEGs (benchmarks/image_training.py's photo-like
  ones), CelebA's geometry, ResNet-50 built from torchvision's config with random weights;
- MultiNLI: 82,462 + 123,712 token rows of 128 (premise and hypothesis: log-normal lengths,
  medians 22 and 11 word pieces, sigma 0.5 and 0.4, plus [CLS] and two [SEP]; mean about 41 real
  tokens: an assumption, MultiNLI-like), BERT-base built from its config with random weights.

Each is evaluated as a backbone run evaluates it (ModuleStack's predict: inference mode, bf16 on
CUDA): ``streamed`` (today's: images decoded by DataLoader workers at every evaluation, token rows in
dataset order, 256 a batch) and ``prepared`` (XRM/engine/evaluation_inputs.py: decoded or ordered
once, then large batches). It prints the examples a second of each, the one-off preparation, and the
evaluation time of one whole run at the paper's cadence (CelebA 10001 steps, every 50; MultiNLI
60001, every 250): before, both splits at every evaluation through today's pass; after, the test
split only where selection looks (mean test passes from benchmarks/evaluation_cost.py's simulated
curves) through the prepared pass. Rates measured on a scaled split are extrapolated linearly to the
real sizes (said in the output).
"""
import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from benchmarks.backbone_step import image_model, text_model  # noqa: E402
from benchmarks.evaluation_cost import SIZES, RunSize, simulated_records, tested_evaluations  # noqa: E402
from benchmarks.image_training import make_celeba_folder  # noqa: E402
from XRM.common.devices import resolve_device  # noqa: E402
from XRM.data.image_datasets import ImageInputs  # noqa: E402
from XRM.data.image_layouts import celeba_geometry  # noqa: E402
from XRM.data.images import ImageSplit  # noqa: E402
from XRM.engine.evaluation_inputs import EvaluationInputs  # noqa: E402
from XRM.engine.model_stacks import BACKBONE_EVALUATION_BATCH  # noqa: E402
from XRM.networks.classifiers import LinearHead  # noqa: E402

MULTINLI_WIDTH = 128
VOCABULARY = 30522


@dataclass(frozen=True)
class EvaluationRates:
    """Measured evaluation speed of one kind of run: examples a second of today's pass and of the prepared
    one, and the one-off preparation's seconds per example; and how far the two passes' logits are apart
    (the largest absolute difference, and the fraction of examples whose predicted class agrees)."""

    streamed: float
    prepared: float
    preparation: float
    largest_difference: float = 0.0
    agreement: float = 1.0


def run_evaluation_seconds(size: RunSize, tested: float, rates: EvaluationRates) -> tuple[float, float]:
    """(before, after): seconds one run of ``size`` spends evaluating. Before: every evaluation passes over
    both splits through today's pass; after: the splits prepared once, every evaluation's validation
    pass and ``tested`` test passes (where selection looks) through the prepared pass."""
    evaluations = len(size.evaluation_steps())
    before = evaluations * (size.validation + size.test) / rates.streamed
    after = ((size.validation + size.test) * rates.preparation
             + (evaluations * size.validation + tested * size.test) / rates.prepared)
    return before, after


def mean_test_passes(size: RunSize, runs: int = 20, seed: int = 0) -> float:
    """The mean test passes per run by default, over benchmarks/evaluation_cost.py's simulated curves."""
    rng = random.Random(seed)
    return statistics.mean(tested_evaluations(simulated_records(size, rng)) for _ in range(runs))


def _synchronised(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def measure(network: torch.nn.Module, inputs, device: torch.device, num_workers: int) -> EvaluationRates:
    """Today's and the prepared evaluation of ``network`` on ``inputs``: one timed pass each (the prepared
    one after its first, which prepares), after a short untimed warm-up of the network. The head's zero
    weights are drawn at random first, so that the two passes' logits can be compared."""
    network = network.to(device).eval()
    for module in network.modules():
        if isinstance(module, LinearHead):
            torch.nn.init.normal_(module.weight, std=0.05)
    streamed, prepared = (EvaluationInputs(device, num_workers, mode) for mode in ("streamed", "prepared"))
    count = len(inputs)
    with torch.inference_mode():
        warm = min(count, BACKBONE_EVALUATION_BATCH)
        if isinstance(inputs, torch.Tensor):
            network(inputs[:warm])
        else:  # images: random pixels of their shape
            network(torch.randint(0, 256, (warm, *inputs[0].shape), dtype=torch.uint8, device=device))
        start = _synchronised(device)
        today = streamed.predict(inputs, network, BACKBONE_EVALUATION_BATCH)
        streamed_seconds = _synchronised(device) - start
        prepared.predict(inputs, network, BACKBONE_EVALUATION_BATCH)  # prepares, then one pass
        first = _synchronised(device) - start - streamed_seconds
        start = _synchronised(device)
        after = prepared.predict(inputs, network, BACKBONE_EVALUATION_BATCH)
        prepared_seconds = _synchronised(device) - start
    return EvaluationRates(count / streamed_seconds, count / prepared_seconds,
                           max(first - prepared_seconds, 0.0) / count, float((today - after).abs().max()),
                           float((today.argmax(dim=-1) == after.argmax(dim=-1)).float().mean()))


def image_rates(device: torch.device, count: int, num_workers: int, tiny: bool) -> EvaluationRates:
    """:func:`measure` on ``count`` generated CelebA-sized JPEGs with ResNet-50 (resnet18 when ``tiny``)."""
    root = Path(tempfile.mkdtemp())
    make_celeba_folder(root, count)
    paths = sorted(str(path) for path in (root / "celeba" / "img_align_celeba").iterdir())
    split = ImageSplit(paths, np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64), celeba_geometry())
    return measure(image_model(tiny), ImageInputs(split), device, num_workers)


def token_rows(lengths: np.ndarray, width: int, second_segment: np.ndarray | None = None,
               seed: int = 0) -> torch.Tensor:
    """Right-padded token rows [n, width, 3] (int32, as cached) of ``lengths`` real tokens: random ids, token
    type 1 from position ``second_segment`` on (a sentence pair's second sentence; None: one segment)."""
    rng = np.random.default_rng(seed)
    positions = torch.arange(width)[None, :]
    real = positions < torch.from_numpy(np.asarray(lengths, dtype=np.int64))[:, None]
    ids = torch.from_numpy(rng.integers(1000, VOCABULARY, (len(lengths), width))) * real
    types = torch.zeros_like(real)
    if second_segment is not None:
        types = (positions >= torch.from_numpy(np.asarray(second_segment, dtype=np.int64))[:, None]) & real
    return torch.stack([ids, real.long(), types.long()], dim=-1).to(torch.int32)


def multinli_like_tokens(count: int, seed: int = 0) -> torch.Tensor:
    """``count`` token rows [count, 128, 3] of MultiNLI-like pairs (see the module docstring)."""
    rng = np.random.default_rng(seed)
    premise = np.round(22 * np.exp(0.5 * rng.standard_normal(count))).clip(1, 100)
    hypothesis = np.round(11 * np.exp(0.4 * rng.standard_normal(count))).clip(1, 60)
    lengths = np.minimum(premise + hypothesis + 3, MULTINLI_WIDTH)
    return token_rows(lengths, MULTINLI_WIDTH, np.minimum(premise + 2, MULTINLI_WIDTH - 1), seed)


def text_rates(device: torch.device, tokens: torch.Tensor, tiny: bool) -> EvaluationRates:
    """:func:`measure` on token rows ``tokens`` (moved to ``device``, as a run keeps them) with BERT-base
    (a 1-layer, 32-wide BERT when ``tiny``)."""
    return measure(text_model(tiny), tokens.to(device), device, 0)


def scaled(count: int, scale: float) -> int:
    """``count`` times ``scale``, at least one."""
    return max(1, round(count * scale))


def report(size: RunSize, rates: EvaluationRates, tested: float, scale: float) -> str:
    """The lines of one run size: each pass's examples a second, and the run's evaluation time before and after."""
    before, after = run_evaluation_seconds(size, tested, rates)
    measured = scaled(size.validation + size.test, scale)
    return (f"{size.name}: measured on {measured:,} examples ({scale:g} of {size.validation:,} + {size.test:,}"
            f"{'; extrapolated linearly to the real sizes' if scale != 1 else ''})\n"
            f"  today's pass {rates.streamed:,.0f} examples/s; prepared pass {rates.prepared:,.0f} examples/s "
            f"({rates.prepared / rates.streamed:.2f}x), preparing once {rates.preparation * 1e3:.3f} ms per example\n"
            f"  logits of the two passes: at most {rates.largest_difference:.2g} apart, predicted classes agree on "
            f"{rates.agreement:.4%} of the examples\n"
            f"  one run ({size.num_steps} steps, every {size.eval_every}; {tested:.1f} test passes by default): "
            f"evaluation {before / 60:.1f} min today, {after / 60:.1f} min after: ratio {after / before:.3f} "
            f"(target <= 0.333)")


def measurement_options(default_scale: float) -> argparse.ArgumentParser:
    """The options of the benchmarks that measure evaluation (a parent parser): --device, --scale, --num_workers."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--scale", type=float, default=default_scale, help="fraction of the real evaluation "
                        f"splits generated (rates are extrapolated linearly; default {default_scale:g})")
    parser.add_argument("--num_workers", type=int, default=12, help="DataLoader workers decoding images")
    return parser


def parsed(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser``'s arguments, with --scale checked."""
    args = parser.parse_args()
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1], not {args.scale}")
    return args


def device_line(device: torch.device) -> str:
    """The device's name and torch's version."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return f"device {device} ({name}), torch {torch.__version__}"


def main() -> int:
    """Measure both runs' passes and print :func:`report`'s lines; 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[measurement_options(1.0)])
    parser.add_argument("--tiny", action="store_true", help="resnet18 and a 1-layer BERT: checks the script on a CPU")
    args = parsed(parser)
    device = resolve_device(args.device)
    celeba, multinli = SIZES
    print(device_line(device))
    image = image_rates(device, scaled(celeba.validation + celeba.test, args.scale), args.num_workers, args.tiny)
    print(report(celeba, image, mean_test_passes(celeba), args.scale), flush=True)
    tokens = multinli_like_tokens(scaled(multinli.validation + multinli.test, args.scale))
    print(f"  (MultiNLI-like rows: mean {float(tokens[..., 1].sum(1).float().mean()):.1f} real tokens of "
          f"{MULTINLI_WIDTH})")
    text = text_rates(device, tokens, args.tiny)
    print(report(multinli, text, mean_test_passes(multinli), args.scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
