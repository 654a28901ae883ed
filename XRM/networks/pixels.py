"""The pixel statistics ImageNet-pretrained backbones expect, and uint8 images normalised with them
on the device (importable without torch: the data layouts read the statistics)."""
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise_pixels(images: "torch.Tensor") -> "torch.Tensor":
    """uint8 images [..., 3, H, W] as float32 with ImageNet's normalisation, computed as ToTensor
    and Normalize compute it (the same values), on the images' device."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=images.device)[:, None, None]
    return images.float().div(255).sub(mean).div(std)
