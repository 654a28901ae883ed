"""A built-in dataset where memorisation hurts, generated from a seed (no download).

The construction is the interpretable experiment of the paper (Figure 1; facts in
PAPER_FACTS.md): a weak core feature x_y ~ +-1, a strong spurious feature x_a ~ +-5 whose
sign disagrees with the label for a minority of examples, and many per-example noise
dimensions that let a model memorise that minority instead of learning x_y.
"""
from dataclasses import dataclass

import torch

from XRM.data.base import GroupDataset, SplitTensors
from XRM.data.registry import register_dataset


@dataclass(frozen=True)
class SpuriousDataSpec:
    """Parameters of one synthetic split."""

    n: int = 1000
    minority_fraction: float = 0.1
    noise_dim: int = 1798
    noise_std: float = 0.5
    feature_std: float = 0.12
    spurious_scale: float = 5.0


def make_spurious_split(spec: SpuriousDataSpec, generator: torch.Generator) -> SplitTensors:
    """Draw one split: x = [x_y, x_a, noise], y ~ Bernoulli(0.5), a = the class x_a points to.

    Exactly ``round(n * minority_fraction)`` examples are in the minority (a != y).
    """
    n = spec.n
    y = torch.randint(0, 2, (n,), generator=generator)
    sign = 1.0 - 2.0 * y.float()  # class 0 -> +1, class 1 -> -1
    core = sign + spec.feature_std * torch.randn(n, generator=generator)
    spurious = spec.spurious_scale * (sign + spec.feature_std * torch.randn(n, generator=generator))
    minority = torch.zeros(n, dtype=torch.bool)
    minority[torch.randperm(n, generator=generator)[: round(n * spec.minority_fraction)]] = True
    spurious = torch.where(minority, -spurious, spurious)
    noise = spec.noise_std * torch.randn(n, spec.noise_dim, generator=generator)
    x = torch.cat([core[:, None], spurious[:, None], noise], dim=1)
    a = torch.where(minority, 1 - y, y)
    return SplitTensors(x, y, a)


def make_spurious_splits(
    seed: int, train: SpuriousDataSpec, evaluation: SpuriousDataSpec
) -> dict[str, SplitTensors]:
    """Train, validation and test splits drawn from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "tr": make_spurious_split(train, generator),
        "va": make_spurious_split(evaluation, generator),
        "te": make_spurious_split(evaluation, generator),
    }


@register_dataset("Synthetic")
class SyntheticSpurious(GroupDataset):
    """Built-in spurious-correlation data: 1000 examples per split, 1800 dimensions.

    The spurious feature agrees with the label for 90% of training examples and 50% of
    validation and test examples. Groups: (y, a), a = 1 - y for the minority.
    """

    family = "synthetic"
    num_steps, eval_every = 1001, 50
    data_seed = 0
    train_spec = SpuriousDataSpec(minority_fraction=0.1)
    evaluation_spec = SpuriousDataSpec(minority_fraction=0.5)

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Generate the splits (``data_path`` is not used: nothing is read from disk)."""
        return make_spurious_splits(self.data_seed, self.train_spec, self.evaluation_spec)
