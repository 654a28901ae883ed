"""The pixel statistics ImageNet-pretrained backbones expect, and uint8 images normalised with them
on the device (importable without torch: the data layouts read the statistics)."""
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pixel_statistics(device: "torch.device") -> tuple["torch.Tensor", "torch.Tensor"]:
    """ImageNet's mean and standard deviation [3, 1, 1] as float32 tensors on ``device``."""
    import torch

    return (torch.tensor(IMAGENET_MEAN, device=device)[:, None, None],
            torch.tensor(IMAGENET_STD, device=device)[:, None, None])


def normalise_pixels(images: "torch.Tensor",
                     statistics: tuple["torch.Tensor", "torch.Tensor"] | None = None) -> "torch.Tensor":
    """uint8 images [..., 3, H, W] as float32 with ImageNet's normalisation, computed as ToTensor
    and Normalize compute it (the same values), on the images' device; ``statistics``: pixel_statistics'
    tensors made once (a captured CUDA graph copies nothing from the host)."""
    mean, std = statistics or pixel_statistics(images.device)
    return images.float().div(255).sub(mean).div(std)
