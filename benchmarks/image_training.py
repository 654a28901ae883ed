"""Whole-run throughput of phase-2 fine-tuning of ResNet-50 on images read from disk.

python benchmarks/image_training.py --images 4096 --steps 201 --num_workers 12
Writes a Waterbirds-layout folder of random 256x256 JPEGs (as feature_extraction.py does),
then times train.run (ERM, random weights: the same cost as ImageNet ones) through the real
data path: PIL decoding and transforms in DataLoader workers, pinned memory, bf16 autocast.
Evaluation runs at the first and last step only, and is timed apart.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from benchmarks.feature_extraction import make_folder  # noqa: E402
from XRM.records import run_directory  # noqa: E402
from XRM.train import resolve_device, run  # noqa: E402


def main() -> None:
    """Time one fine-tuning run and print training images per second."""
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
    common = {"dataset": "Waterbirds", "algorithm": "ERM", "group_labels": "yes", "seed": 0,
              "data_path": str(root / "data"), "device": str(device), "inputs": "images", "backbone_weights": "none",
              "num_workers": args.num_workers, "progress": False}
    timings = {}
    for name, steps in (("evaluation only", 1), ("training", args.steps)):
        overrides = {"num_steps": steps, "eval_every": 10 ** 9, "batch_size": args.batch_size}
        start = time.perf_counter()
        run({**common, "hparams_comb": steps, "hparams_overrides": overrides,
             "out_dir": str(run_directory(root / "out", "ERM", "Waterbirds", "yes"))})
        timings[name] = time.perf_counter() - start
    # the training run evaluates twice (first and last step); the 1-step run once
    train_seconds = timings["training"] - 2 * timings["evaluation only"]
    images = (args.steps - 1) * args.batch_size
    print(f"device {device}, {args.images} images, batch {args.batch_size}, {args.num_workers} workers: "
          f"{(args.steps - 1) / train_seconds:.1f} steps/s, {images / train_seconds:.0f} training images/s; "
          f"one evaluation of {args.images * 2 // 5} images (plus start-up) {timings['evaluation only']:.1f} s")


if __name__ == "__main__":
    main()
