"""Whole-run throughput of phase-2 fine-tuning of ResNet-50 on JPEGs read from disk, against the model step alone.

python benchmarks/image_training.py --images 4096 --steps 221 --batch_size 128 --num_workers 15
XRM_IMAGE_DECODING=workers python benchmarks/image_training.py ...   (force decoding in DataLoader workers)
XRM_IMAGE_DECODER=torchvision python benchmarks/image_training.py ...   (force a decoder: torchcodec, torchvision, pil)

Writes a CelebA-layout folder of generated 178x218 JPEGs (CelebA's size; smooth random
colour fields with a little grain, quality 90: about 11 kB each, photograph-like rather than pixel
noise, which no JPEG encoder compresses), then times train_stack (ERM, SGD, random weights:
the same cost as ImageNet ones) through the real data path: files read by DataLoader
workers, decoded and shaped (centre crop 178, resize 224) where XRM_IMAGE_DECODING says,
bf16 autocast and channels_last on CUDA. Training speed is the difference between a short
and a long run (after an untimed one: the first run of a process also pays for starting CUDA,
cuDNN and the decoder, which once made the short run the longer), so start-up and evaluation
(first and last step only) cancel out. Then
the model step alone (benchmarks/backbone_step.py's: random uint8 images already on the
device, normalised there as in training, same batch size, cuDNN's default kernel choice as
in training) gives the pace the data path is measured against.
"""
import argparse
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from benchmarks.backbone_step import image_model, time_steps  # noqa: E402
from XRM.common.devices import resolve_device  # noqa: E402
from XRM.data.image_decoders import image_decoder  # noqa: E402
from XRM.data.metadata_table import table_from_rows, write_metadata_csv  # noqa: E402
from XRM.networks.classifiers import use_cuda_graphs  # noqa: E402
from XRM.results.records import run_directory  # noqa: E402
from XRM.runs.spec import RunSpec  # noqa: E402
from XRM.runs.train import train_stack  # noqa: E402

WIDTH, HEIGHT = 178, 218  # CelebA's aligned images


def write_photo(path: Path, seed: int) -> None:
    """A 178x218 JPEG: a smooth random colour field (noise at 1/16 scale, upsampled) with a little grain."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (HEIGHT // 16 + 1, WIDTH // 16 + 1, 3), dtype=np.uint8))
    pixels = np.asarray(coarse.resize((WIDTH, HEIGHT), Image.BICUBIC), dtype=np.int16)
    grain = rng.integers(-6, 7, pixels.shape)
    Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8)).save(path, quality=90)


def _write_one(job: tuple[str, int]) -> None:
    write_photo(Path(job[0]), job[1])


def make_celeba_folder(root: Path, count: int) -> None:
    """celeba/: ``count`` generated JPEGs split 60/20/20 and metadata_celeba.csv."""
    images = root / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(count)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_one, [(str(images / name), i) for i, name in enumerate(names)], chunksize=64)
    rng = np.random.default_rng(0)
    split = np.where(np.arange(count) < count * 3 // 5, 0, np.where(np.arange(count) < count * 4 // 5, 1, 2))
    write_metadata_csv(table_from_rows(list(range(count)), names, split, rng.integers(0, 2, count),
                                       rng.integers(0, 2, count)), root / "celeba" / "metadata_celeba.csv")


def main() -> None:
    """Time two fine-tuning runs and the model step alone; print images per second of each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=4096, help="generated images (60/20/20 split)")
    parser.add_argument("--steps", type=int, default=221, help="steps of the long run (the short one has 21)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_workers", type=int, default=8)
    parser.add_argument("--no_cuda_graphs", action="store_true", help="launch every kernel of the ResNet's passes "
                        "(default: replayed from CUDA graphs on a GPU, as main.py trains)")
    parser.add_argument("--compile_backbone", action="store_true", help="compile the ResNet's passes with "
                        "torch.compile before they are captured (main.py's --compile_backbone)")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18"],
                        help="resnet18: a quick check on a CPU")
    args = parser.parse_args()
    device = resolve_device(args.device)
    root = Path(tempfile.mkdtemp())
    make_celeba_folder(root / "data", args.images)
    size = sum(p.stat().st_size for p in (root / "data" / "celeba" / "img_align_celeba").iterdir()) / args.images
    common = {"phase": 2, "dataset": "CelebA", "algorithm": "ERM", "group_labels": "yes", "seed": 0,
              "out_dir": str(run_directory(root / "out", "ERM", "CelebA", "yes")), "data_path": str(root / "data"),
              "device": str(device), "inputs": "images", "image_backbone": args.backbone, "backbone_weights": "none",
              "num_workers": args.num_workers, "cuda_graphs": not args.no_cuda_graphs,
              "compile_backbone": args.compile_backbone}
    # Two runs that differ only in length: start-up and their two evaluations (first and
    # last step) cancel out of the difference, which is pure training.
    short, long = 21, args.steps
    seconds = {}
    for steps in (0, short, long):  # an untimed first run starts CUDA, cuDNN and the JPEG decoder
        overrides = {"num_steps": max(steps, 2), "eval_every": 10 ** 9, "batch_size": args.batch_size}
        start = time.perf_counter()
        train_stack([RunSpec(**common, hparams_comb=steps, hparams_overrides=overrides)])
        seconds[steps] = time.perf_counter() - start
    per_step = (seconds[long] - seconds[short]) / (long - short)
    x = torch.randint(0, 256, (args.batch_size, 3, 224, 224), dtype=torch.uint8, device=device)
    model = image_model(args.backbone == "resnet18").to(device)
    graphed = device.type == "cuda" and not args.no_cuda_graphs
    if graphed:
        use_cuda_graphs(model, tuple(x.shape), compile_images=args.compile_backbone)
    alone = time_steps(model, x, "sgd", 1e-4, 50, 10, device)
    print(f"device {device}, {args.images} JPEGs of {size / 1000:.1f} kB, batch {args.batch_size}, "
          f"{args.num_workers} workers, decoding {os.environ.get('XRM_IMAGE_DECODING', 'auto')} "
          f"with {image_decoder().name}, CUDA graphs {'on' if graphed else 'off'}, "
          f"compiled {'yes' if graphed and model.graphs.compiled else 'no'}: "
          f"{1 / per_step:.1f} steps/s, {args.batch_size / per_step:.0f} training images/s; model step alone "
          f"{args.batch_size / alone:.0f} images/s; data path at {alone / per_step:.0%} of it; "
          f"a {short}-step run with its 2 evaluations of {args.images * 2 // 5} images: {seconds[short]:.1f} s "
          f"(the process's first, which also starts CUDA and the decoder: {seconds[0]:.1f} s)")


if __name__ == "__main__":
    main()
