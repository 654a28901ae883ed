"""Small data where a linear model can memorise: the Synthetic construction (x_y ~ +-1, x_a ~ +-5
against the label for a 10% training minority, per-example noise dimensions), in memory or as
a features.pt in the documented format."""
from pathlib import Path

import torch

from XRM.data.base import SplitTensors
from XRM.data.synthetic import SpuriousDataSpec, make_spurious_split


def spurious_splits(seed: int, n: int = 200, noise_dim: int = 400) -> dict[str, SplitTensors]:
    """Training (10% minority), validation and test (50% minority) splits of n examples each."""
    generator = torch.Generator().manual_seed(seed)
    train = SpuriousDataSpec(n=n, noise_dim=noise_dim, minority_fraction=0.1)
    evaluation = SpuriousDataSpec(n=n, noise_dim=noise_dim, minority_fraction=0.5)
    return {"tr": make_spurious_split(train, generator), "va": make_spurious_split(evaluation, generator),
            "te": make_spurious_split(evaluation, generator)}


def write_features_file(path: Path, splits: dict[str, SplitTensors]) -> Path:
    """``splits`` as a features.pt: {'tr'|'va'|'te': {'x': float[n, d], 'y': long[n, 1], 'm': long[n, 1]}}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: {"x": split.x, "y": split.y[:, None], "m": split.a[:, None]} for name, split in splits.items()},
               path)
    return path


def minority_accuracy(logits: torch.Tensor, split: SplitTensors) -> float:
    """Accuracy of ``logits`` [n, K] on the split's minority (a != y)."""
    minority = split.a != split.y
    return (logits.argmax(dim=1) == split.y)[minority].float().mean().item()
