"""The dataset contract: three splits of (x, y, a) tensors plus what training needs to know."""
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from XRM.common.errors import UserError
from XRM.common.run_options import INPUT_CHOICES  # noqa: F401 (re-exported)
from XRM.data.metadata_table import SPLIT_IDS
from XRM.networks.backbones import DEFAULT_IMAGE_BACKBONE, BackboneSpec, default_text_model

SPLITS = tuple(SPLIT_IDS)  # ("tr", "va", "te")


@dataclass(frozen=True)
class InputOptions:
    """A run's choices about its inputs and backbone (main.py's --inputs, --image_backbone,
    --text_model, --backbone_weights)."""

    inputs: str = "auto"
    image_backbone: str = DEFAULT_IMAGE_BACKBONE
    text_model: str | None = None  # None: $XRM_TEXT_MODEL or bert-base-uncased
    pretrained: bool = True

    @classmethod
    def from_run_args(cls, run_args: dict) -> "InputOptions":
        """The options recorded in a run's arguments (absent keys take the defaults)."""
        return cls(inputs=run_args.get("inputs") or "auto",
                   image_backbone=run_args.get("image_backbone") or DEFAULT_IMAGE_BACKBONE,
                   text_model=run_args.get("text_model"),
                   pretrained=run_args.get("backbone_weights", "pretrained") != "none")

    def image_spec(self) -> BackboneSpec:
        """The image backbone to build."""
        return BackboneSpec(self.image_backbone, self.pretrained)

    def text_spec(self) -> BackboneSpec:
        """The text model to tokenise with and build."""
        return BackboneSpec(self.text_model or default_text_model(), self.pretrained)


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
    #: what the network reads: "features", "images", "tokens", "pixels", "vectors"
    inputs: str = "features"
    #: the pretrained model of the "image" and "text" families (None: a head on the inputs)
    backbone: BackboneSpec | None = None
    #: draw training batches balanced over classes (CivilComments, as the reference's
    #: balanced_batch) unless the algorithm draws them its own way (RWG, SUBG)
    balanced_batches: bool = False
    #: what each label and attribute value means, where the dataset knows (plots name the groups with them)
    label_names: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()

    def resolve(self, data_path: str, phase: int, options: InputOptions) -> "GroupDataset":
        """The dataset as a run of ``phase`` trains on it: datasets with one kind of input
        return themselves; those with several (images or their features) return a view
        with ``inputs``, ``family``, and ``backbone`` set."""
        if options.inputs not in ("auto", self.inputs):
            raise UserError(f"{self.name} trains on {self.inputs} only; drop --inputs {options.inputs}")
        return self

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Read (or build) the train/validation/test splits, keyed by ``SPLITS``, on the CPU."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_splits")
