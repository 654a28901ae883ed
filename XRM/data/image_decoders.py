"""Which library turns an image file's bytes into pixels: TorchCodec where it is installed, else
torchvision.io's decoders (deprecated since torchvision 0.29), else PIL.

Each decoder gives RGB uint8 tensors [3, H, W]; TorchCodec and torchvision also decode batches of
JPEGs on a CUDA device (nvJPEG). On the CPU the three give the same pixels (the same libjpeg-turbo
and libpng arithmetic; tests/test_image_decoding.py compares them on JPEG and PNG files).

``XRM_IMAGE_DECODER`` chooses: ``torchcodec``, ``torchvision``, ``pil``, or ``auto`` (the default):
the first of those three that imports and decodes a small JPEG. The choice is made once per
process and value of the variable; DataLoader workers inherit it with the datasets that hold it.
"""
import functools
import io
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from XRM.common.errors import UserError
from XRM.common.registry import Registry

DECODER_VARIABLE = "XRM_IMAGE_DECODER"
#: what a decoder raises on a file it cannot decode (PIL: OSError; TorchCodec and torchvision:
#: RuntimeError, or ValueError for bytes of no image format TorchCodec knows)
DECODING_ERRORS = (OSError, RuntimeError, ValueError)


@dataclass(frozen=True)
class ImageDecoder:
    """One library's image decoding (module-level functions: a dataset holding it pickles)."""

    #: the encoded bytes of a file (uint8 [n], on the CPU) -> its RGB pixels, uint8 [3, H, W] on the CPU
    decode: Callable[[torch.Tensor], torch.Tensor]
    #: (encoded JPEGs on the CPU, device) -> their RGB pixels on ``device``; None if it decodes on the CPU only
    decode_jpegs: Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]] | None = None
    name: str = ""


IMAGE_DECODERS: Registry[ImageDecoder] = Registry("image decoder")
#: ``auto`` takes the first of these that works
PREFERENCE = ("torchcodec", "torchvision", "pil")


def _decode_with_torchcodec(content: torch.Tensor) -> torch.Tensor:
    from torchcodec.decoders import decode_image

    return decode_image(content, mode="RGB")


def _decode_jpegs_with_torchcodec(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchcodec.decoders import decode_jpeg

    return decode_jpeg(encoded, mode="RGB", device=device)


def _decode_with_torchvision(content: torch.Tensor) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    return decode_image(content, mode=ImageReadMode.RGB)


def _decode_jpegs_with_torchvision(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


def _decode_with_pil(content: torch.Tensor) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(content.numpy().tobytes())) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def _register(name: str, decode: Callable, decode_jpegs: Callable | None) -> None:
    IMAGE_DECODERS.add(name, ImageDecoder(decode, decode_jpegs, name))


_register("torchcodec", _decode_with_torchcodec, _decode_jpegs_with_torchcodec)
_register("torchvision", _decode_with_torchvision, _decode_jpegs_with_torchvision)
_register("pil", _decode_with_pil, None)


def _probe_jpeg() -> tuple[torch.Tensor, torch.Tensor]:
    """A 16x16 JPEG of two flat halves (encoded by PIL) and the pixels PIL decodes from it."""
    import numpy as np
    from PIL import Image

    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[:, 8:] = (200, 40, 90)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    encoded = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    return encoded, _decode_with_pil(encoded)


@functools.cache
def decoder_problem(name: str) -> str | None:
    """Why decoder ``name`` cannot decode in this environment (it does not import, or decodes a
    small JPEG to other pixels than PIL's), or None if it can."""
    encoded, expected = _probe_jpeg()
    try:
        decoded = IMAGE_DECODERS[name].decode(encoded)
    except (ImportError, AttributeError, *DECODING_ERRORS) as error:  # absent, or a library that fails to load
        return f"{type(error).__name__}: {error}"
    if decoded.shape != expected.shape or (decoded.int() - expected.int()).abs().max() > 1:
        return "it decodes a test JPEG to other pixels than PIL"
    return None


def image_decoder() -> ImageDecoder:
    """The decoder ``$XRM_IMAGE_DECODER`` asks for (see the module docstring); a UserError if it is
    unknown or cannot decode here."""
    asked = os.environ.get(DECODER_VARIABLE, "auto") or "auto"
    if asked == "auto":
        return IMAGE_DECODERS[next(name for name in PREFERENCE if decoder_problem(name) is None)]
    if asked not in IMAGE_DECODERS:
        raise UserError(f"{DECODER_VARIABLE}={asked}: choose one of auto, {', '.join(PREFERENCE)}")
    problem = decoder_problem(asked)
    if problem is not None:
        raise UserError(f"{DECODER_VARIABLE}={asked} cannot decode images here ({problem}): "
                        f"install it (pip install '.[torchcodec]' for TorchCodec) or set {DECODER_VARIABLE}=auto")
    return IMAGE_DECODERS[asked]
