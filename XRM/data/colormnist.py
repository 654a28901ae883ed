"""ColorMNIST as the reference builds it: MNIST digits, a noisy label, a colour that mostly agrees.

y = 1 when the digit is below 5, then flipped with probability 0.25 (label noise). Each
14x14 image (MNIST subsampled 2x) is put in one of two channels, its colour, which equals y
except with probability ``colour_noise``: 0.2 and 0.1 in the two training environments
(so colour agrees with y 80% and 90% of the time) and 0.9 at test (10%). Colour predicts
the training label better than the digit does: the spurious correlation.

Splits: the first 5/6 of MNIST's training set (50,000 digits) shuffled is the training
split, the rest the validation split, MNIST's test set the test split; in training and
validation, even positions form environment 0 and odd ones environment 1. As in the
reference, the attribute a is the environment (0 for every test example). The data are
drawn from a fixed seed, so every run sees the same dataset.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from XRM.common.errors import UserError
from XRM.data.base import GroupDataset, SplitTensors
from XRM.data.files import download_hint
from XRM.data.metadata_table import size_warnings
from XRM.data.registry import register_dataset
from XRM.data.sources import MNIST_SPLIT_SIZES

DATA_SEED = 0
LABEL_NOISE = 0.25


@dataclass(frozen=True)
class ColourEnvironment:
    """How noisy the label and the colour of one environment are."""

    label_noise: float
    colour_noise: float


TRAIN_ENVIRONMENTS = (ColourEnvironment(LABEL_NOISE, 0.2), ColourEnvironment(LABEL_NOISE, 0.1))
TEST_ENVIRONMENT = ColourEnvironment(LABEL_NOISE, 0.9)


@dataclass
class ColouredDigits:
    """Coloured images [n, 2, 14, 14] in [0, 1], noisy labels y, and the colour (lit channel) of each."""

    x: torch.Tensor
    y: torch.Tensor
    colour: torch.Tensor


def _flip(bits: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    return bits ^ (torch.rand(len(bits), generator=generator) < probability).long()


def colour_digits(images: torch.Tensor, digits: torch.Tensor, environment: ColourEnvironment,
                  generator: torch.Generator) -> ColouredDigits:
    """Label, noise and colour MNIST ``images`` [n, 28, 28] (uint8) of ``digits`` [n]."""
    y = _flip((digits < 5).long(), environment.label_noise, generator)
    colour = _flip(y, environment.colour_noise, generator)
    small = images[:, ::2, ::2].float() / 255.0
    x = torch.zeros(len(images), 2, *small.shape[1:])
    x[torch.arange(len(images)), colour] = small
    return ColouredDigits(x, y, colour)


def environments_split(images: torch.Tensor, digits: torch.Tensor, generator: torch.Generator) -> SplitTensors:
    """A training or validation split: even rows environment 0, odd rows environment 1; a = environment."""
    parts = [colour_digits(images[e::2], digits[e::2], environment, generator)
             for e, environment in enumerate(TRAIN_ENVIRONMENTS)]
    attribute = torch.cat([torch.full((len(part.y),), e, dtype=torch.long) for e, part in enumerate(parts)])
    return SplitTensors(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]), attribute)


def read_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images [n, 28, 28] uint8 and digits [n] from ``root`` (torchvision's layout: root/MNIST/raw)."""
    from torchvision.datasets import MNIST

    try:
        mnist = MNIST(root=str(root), train=train, download=False)
    except (RuntimeError, OSError, ValueError) as error:
        raise UserError(f"MNIST is not under {root} ({str(error).splitlines()[0]}); "
                        f"{download_hint(root.parent, 'cmnist')}") from None
    return mnist.data, mnist.targets


def report_sizes(root: Path, n_train: int, n_test: int) -> None:
    """Print MNIST's split sizes and the ColorMNIST splits made of them; warn where MNIST
    is not the official 60,000 / 10,000 (a truncated copy would otherwise train silently)."""
    n_tr = n_train * 5 // 6
    print(f"ColorMNIST: MNIST under {root} has {n_train} train and {n_test} test images: "
          f"tr {n_tr}, va {n_train - n_tr}, te {n_test}", file=sys.stderr)
    for line in size_warnings(f"MNIST under {root}", {"train": n_train, "test": n_test}, MNIST_SPLIT_SIZES,
                              "images"):
        print(line, file=sys.stderr)


@register_dataset("ColorMNIST", aliases=("cmnist",))  # download.py's name
class ColorMNIST(GroupDataset):
    """ColorMNIST (see the module docstring): 2x14x14 images, an MLP with 390 hidden units, Adam."""

    family, inputs = "mlp", "pixels"
    num_steps, eval_every = 1001, 50

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Build the three splits from <data_path>/mnist."""
        root = Path(data_path) / "mnist"
        images, digits = read_mnist(root, train=True)
        test_images, test_digits = read_mnist(root, train=False)
        report_sizes(root, len(images), len(test_images))
        generator = torch.Generator().manual_seed(DATA_SEED)
        n_train = len(images) * 5 // 6
        order = torch.randperm(n_train, generator=generator)
        test = colour_digits(test_images, test_digits, TEST_ENVIRONMENT, generator)
        return {
            "tr": environments_split(images[:n_train][order], digits[:n_train][order], generator),
            "va": environments_split(images[n_train:], digits[n_train:], generator),
            "te": SplitTensors(test.x, test.y, torch.zeros_like(test.y)),
        }
