"""ResNet-50 penultimate-layer features of an image dataset, for features.pt.

The backbone carries ImageNet weights through torchvision's weights API
(``ResNet50_Weights.IMAGENET1K_V1``: the ``pretrained=True`` weights the reference
used); ``weights=None`` gives a randomly initialised network, for tests. torchvision is
imported when a network is built, not with this module.
"""
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from XRM.common.errors import UserError, unwrap_worker_errors
from XRM.data.base import SPLITS
from XRM.data.feature_file import FEATURES_FILE, save_feature_file
from XRM.data.image_layouts import get_image_layout
from XRM.data.images import ImageSplitDataset, load_image_split
from XRM.networks.backbones import imagenet_weights, load_weights

#: ``weights`` meaning "the reference's ImageNet weights of ``architecture``" (IMAGENET1K_V1)
DEFAULT_WEIGHTS = "imagenet"


def build_feature_extractor(weights=DEFAULT_WEIGHTS, architecture: str = "resnet50") -> torch.nn.Module:
    """A torchvision ResNet with its classifier replaced by the identity, in eval mode.

    ``weights``: DEFAULT_WEIGHTS, a torchvision Weights object, or None (random).
    ``architecture`` other than resnet50 (e.g. resnet18) is for quick tests only.
    """
    import torchvision

    model = getattr(torchvision.models, architecture)(weights=None)
    if weights == DEFAULT_WEIGHTS:
        weights = imagenet_weights(architecture)
    if weights is not None:
        model.load_state_dict(load_weights(weights))
    model.fc = torch.nn.Identity()
    return model.eval()


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def embed(model: torch.nn.Module, dataset: torch.utils.data.Dataset, device: torch.device,
          batch_size: int = 128, num_workers: int = 4, description: str = "features") -> torch.Tensor:
    """Features [n, d] of every image of ``dataset``, in dataset order, computed in float32
    (channels_last on CUDA) and returned on the CPU."""
    on_cuda = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if on_cuda else torch.contiguous_format)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=on_cuda, persistent_workers=False)
    outputs = []
    for _, images, _, _ in tqdm(unwrap_worker_errors(loader), total=len(loader), desc=description, unit=" batches",
                                file=sys.stderr):
        images = images.to(device, non_blocking=True)
        if on_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        # float32, as the reference extracted: the features are computed once and every
        # linear head trains on them, so bf16 rounding would be baked into every run.
        outputs.append(model(images).float().cpu())
    if not outputs:
        raise UserError(f"{description}: no images in this split; check the metadata file")
    return torch.cat(outputs)


def write_features(data_path: str | Path, name: str, weights=DEFAULT_WEIGHTS, architecture: str = "resnet50",
                   device: torch.device | None = None, batch_size: int = 128, num_workers: int = 4) -> Path:
    """Compute features.pt for image dataset ``name`` (tr/va/te in metadata order) and
    write it atomically to <data_path>/<folder>/features.pt; returns its path."""
    device = device or default_device()
    model = build_feature_extractor(weights, architecture)
    features = {}
    for split in SPLITS:
        images = load_image_split(data_path, name, split)
        x = embed(model, ImageSplitDataset(images), device, batch_size, num_workers, f"{name} {split}")
        features[split] = {"x": x, "y": torch.as_tensor(images.y, dtype=torch.long).view(-1, 1),
                           "m": torch.as_tensor(images.a, dtype=torch.long).view(-1, 1)}
    path = Path(data_path) / get_image_layout(name).folder / FEATURES_FILE
    save_feature_file(features, path)
    return path
