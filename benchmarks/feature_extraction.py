"""Throughput of ResNet-50 feature extraction (download.py --features) on synthetic JPEGs.

python benchmarks/feature_extraction.py --images 2048 --num_workers 8
Writes a Waterbirds-shaped folder of random 256x256 JPEGs under --work, then times
write_features with a randomly initialised ResNet-50 (same cost as ImageNet weights).
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from XRM.data.extract_features import write_features  # noqa: E402
from XRM.data.metadata_table import table_from_rows, write_metadata_csv  # noqa: E402


def make_folder(root: Path, count: int) -> None:
    """A waterbirds/ folder with ``count`` random JPEGs split 60/20/20 and its metadata CSV."""
    images = root / "waterbirds" / "waterbird_complete95_forest2water2"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        names.append(f"{i:06d}.jpg")
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(images / names[-1])
    split = np.where(np.arange(count) < count * 3 // 5, 0, np.where(np.arange(count) < count * 4 // 5, 1, 2))
    write_metadata_csv(table_from_rows(list(range(count)), names, split, rng.integers(0, 2, count),
                                       rng.integers(0, 2, count)), root / "waterbirds" / "metadata_waterbirds.csv")


def main() -> None:
    """Time one write_features call and print images per second."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2048, help="synthetic images to embed")
    parser.add_argument("--batch_size", type=int, default=128, help="images per batch")
    parser.add_argument("--num_workers", type=int, default=8, help="DataLoader workers")
    parser.add_argument("--work", default=None, help="folder for the synthetic data (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.work or tempfile.mkdtemp())
    make_folder(root, args.images)
    start = time.perf_counter()
    path = write_features(root, "waterbirds", weights=None, batch_size=args.batch_size, num_workers=args.num_workers)
    seconds = time.perf_counter() - start
    features = torch.load(path)
    print(f"device={'cuda' if torch.cuda.is_available() else 'cpu'} images={args.images} seconds={seconds:.1f} "
          f"images/s={args.images / seconds:.0f} widths={[tuple(features[s]['x'].shape) for s in ('tr', 'va', 'te')]}")


if __name__ == "__main__":
    main()
