"""The dataset contract: three splits of (x, y, a) tensors plus what training needs to know."""
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

SPLITS = ("tr", "va", "te")
SPLIT_NAMES = {"tr": "train", "va": "validation", "te": "test"}


@dataclass
class SplitTensors:
    """One split: inputs ``x``, labels ``y`` [n] and attributes ``a`` [n].

    ``x`` is a tensor [n, ...] (features, tokens, small images), or a Dataset whose item
    ``i`` is the input tensor of example ``i`` (e.g. an image decoded from disk).
    ``a`` is the spurious attribute that, with ``y``, defines the group of an example.
    """

    x: torch.Tensor | Dataset
    y: torch.Tensor
    a: torch.Tensor

    def __post_init__(self) -> None:
        self.y = self.y.reshape(-1).long()
        self.a = self.a.reshape(-1).long()
        if not len(self.x) == len(self.y) == len(self.a):
            raise ValueError(
                f"x, y and a must have one row per example; got {len(self.x)}, {len(self.y)}, {len(self.a)}")

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "SplitTensors":
        """The same split with every tensor on ``device`` (a Dataset of inputs stays where it is)."""
        x = self.x.to(device) if isinstance(self.x, torch.Tensor) else self.x
        return SplitTensors(x, self.y.to(device), self.a.to(device))


class GroupDataset:
    """Base class of every registered dataset.

    Subclasses set the class attributes below and implement :meth:`load_splits`.
    """

    #: registered name, set by the registry decorator
    name: str = ""
    #: number of classes of y
    num_classes: int = 2
    #: which hyper-parameter search space and network family the dataset uses
    #: ("features": linear head on precomputed features, "synthetic", "mlp", ...)
    family: str = "features"
    #: training steps and evaluation period of the reference protocol
    num_steps: int = 1001
    eval_every: int = 50
    #: bf16 autocast on CUDA (backbones); linear heads on features train in float32
    mixed_precision: bool = False

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Read (or build) the train/validation/test splits, keyed by ``SPLITS``, on the CPU."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_splits")
