"""Images a second of a sweep's ResNet-50 runs: one after another, or as a stack on concurrent CUDA streams.

python benchmarks/image_stack_step.py --device cuda                      # 8 runs, batch sizes drawn 2^U(5, 7)
python benchmarks/image_stack_step.py --device cuda --batch_sizes 32 32 32 32
python benchmarks/image_stack_step.py --device cpu --tiny --steps 2 --warmup 1 --batch_sizes 4 8   (a quick check)

Each run is its own ResNet classifier (random weights, nothing downloaded) with its own SGD, its own batch
size and its own uint8 batch already on the device, its passes replayed from CUDA graphs as main.py trains
on a GPU (bf16 autocast, channels_last). "One after another": every run trains its steps alone, timed
apart, and the sweep's images a second are all runs' images over the sum of their times. "Stacked": every
step, run h's forward pass, loss, backward pass and update are issued on CUDA stream h, so runs whose
batches leave the GPU idle could fill it together. A measurement of what such a stack would give, not the
engine's way: image runs train one per process (docs/engine.md, "CUDA graphs (images)").
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from benchmarks.backbone_step import image_step, timed  # noqa: E402
from XRM.common.search_space import log2_uniform_int  # noqa: E402
from XRM.engine.model_stacks import ModuleStack  # noqa: E402


def paper_batch_sizes(runs: int, seed: int) -> list[int]:
    """``runs`` batch sizes drawn as the reference draws image datasets' (int(2^U(5, 7)): 32 to 127), from ``seed``."""
    draw = log2_uniform_int(5, 7)
    state = np.random.RandomState(seed)
    return [draw(state) for _ in range(runs)]


def build_runs(batch_sizes: list[int], tiny: bool, size: int, device: torch.device) -> list[tuple]:
    """One (ModuleStack, uint8 batch, labels) per batch size, each model's passes captured for its batch."""
    runs = []
    for batch in batch_sizes:
        model, x = image_step("graphs", tiny, batch, size, device)  # captured on a GPU, as main.py trains
        stack = ModuleStack(model, {"optimizer": "sgd", "lr": 1e-4, "weight_decay": 1e-4, "num_steps": 10 ** 6},
                            device, num_workers=0)
        runs.append((stack, x, torch.randint(0, 2, (batch,), device=device)))
    return runs


def run_step(run: tuple) -> None:
    """One training step of one run: forward, cross-entropy, backward, update."""
    stack, x, y = run
    loss = torch.nn.functional.cross_entropy(stack.forward(x)[0], y)
    stack.step(loss)


def stacked_step(runs: list[tuple], streams: list) -> None:
    """One step of every run, run h's on stream h (on a CPU, one after another)."""
    if streams[0] is None:
        for run in runs:
            run_step(run)
        return
    current = torch.cuda.current_stream()
    for run, stream in zip(runs, streams):
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            run_step(run)
    for stream in streams:
        current.wait_stream(stream)


def main() -> None:
    """Time the runs one after another, then stacked, and print images a second of each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_sizes", type=int, nargs="+", help="one per run (default: 8 drawn 2^U(5, 7))")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn batch sizes")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first")
    parser.add_argument("--tiny", action="store_true", help="ResNet-18 at small sizes: checks the script on a CPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch_sizes = args.batch_sizes or paper_batch_sizes(8, args.seed)
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}) "
          f"torch={torch.__version__} batch sizes {batch_sizes}")
    runs = build_runs(batch_sizes, args.tiny, args.image_size, device)
    alone = [timed(lambda run=run: run_step(run), args.steps, args.warmup, device) for run in runs]
    for batch, seconds in zip(batch_sizes, alone):
        print(f"  alone, batch {batch}: {batch / seconds:.0f} images/s")
    images = sum(batch_sizes)
    serial = images / sum(alone)
    streams = [torch.cuda.Stream(device) if device.type == "cuda" else None for _ in runs]
    together = images / timed(lambda: stacked_step(runs, streams), args.steps, args.warmup, device)
    print(f"{len(runs)} runs one after another: {serial:.0f} images/s; stacked on streams: {together:.0f} "
          f"images/s ({together / serial:.2f}x)")


if __name__ == "__main__":
    main()
