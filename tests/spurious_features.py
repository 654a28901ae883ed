"""A small spurious-correlation features file (the Synthetic construction, smaller) that tests write."""
from pathlib import Path

from XRM.data.feature_file import save_feature_file
from XRM.data.synthetic import SpuriousDataSpec, make_spurious_splits


def write_spurious_features(path: Path, n_train: int = 400, n_evaluation: int = 200, noise_dim: int = 28) -> Path:
    """A features file at ``path``: 10% minority in training, 50% in validation and test; 2 + noise_dim dims."""
    splits = make_spurious_splits(0, SpuriousDataSpec(n=n_train, noise_dim=noise_dim, minority_fraction=0.1),
                                  SpuriousDataSpec(n=n_evaluation, noise_dim=noise_dim, minority_fraction=0.5))
    save_feature_file({name: {"x": split.x, "y": split.y[:, None], "m": split.a[:, None]}
                       for name, split in splits.items()}, path)
    return path
