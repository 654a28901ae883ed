"""Whole-run throughput of phase-2 fine-tuning of ResNet-50 on images read from disk.

python benchmarks/image_training.py --images 4096 --steps 201 --num_workers 12
Writes a Waterbirds-layout folder of random 256x256 JPEGs (as feature_extraction.py does),
then times train_stack (ERM, random weights: the same cost as ImageNet ones) through the real
data path: PIL decoding and transforms in DataLoader workers, pinned memory, bf16 autocast.
Training speed is the difference between a short and a long run, so start-up and evaluation
(first and last step only) cancel out.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from benchmarks.feature_extraction import make_folder  # noqa: E402
from XRM.records import run_directory  # noqa: E402
from XRM.devices import resolve_device  # noqa: E402
from XRM.run_spec import RunSpec  # noqa: E402
from XRM.train import train_stack  # noqa: E402


def main() -> None:
    """Time two fine-tuning runs and print training steps and images per second."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=4096, help="synthetic images (60/20/20 split)")
    parser.add_argument("--steps", type=int, default=201)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=8)
    args = parser.parse_args()
    device = resolve_device(args.device)
    root = Path(tempfile.mkdtemp())
    make_folder(root / "data", args.images)
    common = {"phase": 2, "dataset": "Waterbirds", "algorithm": "ERM", "group_labels": "yes", "seed": 0,
              "out_dir": str(run_directory(root / "out", "ERM", "Waterbirds", "yes")), "data_path": str(root / "data"),
              "device": str(device), "inputs": "images", "backbone_weights": "none", "num_workers": args.num_workers}
    # Two runs that differ only in length: start-up and their two evaluations (first and
    # last step) cancel out of the difference, which is pure training.
    short, long = 21, args.steps
    seconds = {}
    for steps in (short, long):
        overrides = {"num_steps": steps, "eval_every": 10 ** 9, "batch_size": args.batch_size}
        start = time.perf_counter()
        train_stack([RunSpec(**common, hparams_comb=steps, hparams_overrides=overrides)])
        seconds[steps] = time.perf_counter() - start
    per_step = (seconds[long] - seconds[short]) / (long - short)
    print(f"device {device}, {args.images} images, batch {args.batch_size}, {args.num_workers} workers: "
          f"{1 / per_step:.1f} steps/s, {args.batch_size / per_step:.0f} training images/s; "
          f"a {short}-step run with its 2 evaluations of {args.images * 2 // 5} images: {seconds[short]:.1f} s")

if __name__ == "__main__":
    main()
