"""Where pretrained backbones come from: torchvision ResNets and Hugging Face text models.

Every loader turns a missing file (offline, no cache) into one UserError that says how to
provide it. ``pretrained=False`` builds the same architecture with random weights (for
tests, benchmarks and debugging); nothing is downloaded then, except a text model's
config when it is not a local folder.
"""
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from XRM.common.errors import UserError
from XRM.common.run_options import (DEFAULT_IMAGE_BACKBONE, DEFAULT_TEXT_MODEL,  # noqa: F401 (re-exported)
                                TEXT_MODEL_VARIABLE)


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone a network starts from: a torchvision model name, or a text model
    (hub name or local folder), with pretrained weights or randomly initialised."""

    name: str
    pretrained: bool = True


def default_text_model() -> str:
    """$XRM_TEXT_MODEL when set, else bert-base-uncased."""
    return os.environ.get(TEXT_MODEL_VARIABLE) or DEFAULT_TEXT_MODEL


# ---------------------------------------------------------------- torchvision
# torchvision is imported inside the functions that use it: it takes seconds, and only
# image backbones need it (text models and feature heads never do).


def weights_file_location(weights) -> Path:
    """Where torch.hub looks for (and caches) a weights file: <TORCH_HOME>/hub/checkpoints/<file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def load_weights(weights) -> dict[str, torch.Tensor]:
    """The state dict of ``weights`` (a torchvision WeightsEnum member or Weights) from the
    torch.hub cache, downloading it if absent; raises UserError saying where to put the
    file when that fails (e.g. offline)."""
    try:
        # What WeightsEnum.get_state_dict does, for any object with a ``url``.
        return torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise UserError(
            f"could not get the ImageNet weights {weights.url} ({error}): download that file by "
            f"hand and put it at {weights_file_location(weights)} (the folder follows TORCH_HOME)") from error


def imagenet_weights(architecture: str):
    """The ImageNet weights the reference used for ``architecture`` (IMAGENET1K_V1)."""
    import torchvision

    return torchvision.models.get_model_weights(architecture).IMAGENET1K_V1


def build_torchvision_backbone(spec: BackboneSpec) -> nn.Module:
    """A torchvision classification model (e.g. resnet50) with ImageNet weights when ``spec.pretrained``."""
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)
    if spec.name not in valid:
        raise UserError(f"unknown image backbone {spec.name!r}; choose a torchvision model, e.g. resnet50, resnet18")
    model = torchvision.models.get_model(spec.name, weights=None)
    if not isinstance(getattr(model, "fc", None), nn.Linear):
        raise UserError(f"image backbone {spec.name!r} has no 'fc' classifier to replace; use a ResNet")
    if spec.pretrained:
        model.load_state_dict(load_weights(imagenet_weights(spec.name)))
    return model


# ---------------------------------------------------------------- Hugging Face


def _looks_like_a_folder(name: str) -> bool:
    # Hub names are "model" or "org/model"; anything else with a slash is meant as a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def _text_model_hint(name: str, error: Exception) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return (f"could not load text model {name!r} ({type(error).__name__}: {first_line}): "
            "online it is downloaded into the Hugging Face cache (HF_HOME); offline, save it on a machine with "
            f"internet (e.g. `huggingface-cli download {name} --local-dir DIR`, or save_pretrained) and pass "
            f"--text_model DIR (or set {TEXT_MODEL_VARIABLE}=DIR)")


def _from_pretrained(loader, name: str, **kwargs):
    if _looks_like_a_folder(name) and not Path(name).expanduser().is_dir():
        raise UserError(f"text model folder {name} does not exist; pass --text_model with a folder holding "
                        "config.json, the weights and the tokenizer files")
    path = str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
    try:
        return loader(path, **kwargs)
    except (OSError, ValueError) as error:  # transformers' "can't find / can't connect" errors
        raise UserError(_text_model_hint(name, error)) from None


def load_tokenizer(name: str):
    """The fast tokenizer of text model ``name`` (hub name or local folder)."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer.from_pretrained, name, use_fast=True)


def _with_sdpa_attention(load, *args, **kwargs):
    """``load(*args, attn_implementation="sdpa", **kwargs)``: PyTorch's fused attention; the
    model's default attention where the installed transformers or the model offers no SDPA."""
    try:
        return load(*args, attn_implementation="sdpa", **kwargs)
    except (TypeError, ValueError) as error:
        if "sdpa" not in str(error).lower() and "attn_implementation" not in str(error):
            raise
        return load(*args, **kwargs)


def build_text_encoder(spec: BackboneSpec) -> nn.Module:
    """A transformers encoder with a pooler (BertModel for bert-base-uncased), pretrained or
    randomly initialised from its config, with SDPA attention where transformers has it."""
    from transformers import AutoConfig, AutoModel

    if spec.pretrained:
        return _from_pretrained(lambda path, **kwargs: _with_sdpa_attention(AutoModel.from_pretrained, path, **kwargs),
                                spec.name)
    config = _from_pretrained(AutoConfig.from_pretrained, spec.name)
    return _with_sdpa_attention(AutoModel.from_config, config)
