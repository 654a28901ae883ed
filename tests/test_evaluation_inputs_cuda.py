"""Prepared evaluation inputs on a GPU (XRM/engine/evaluation_inputs.py): images kept on the device or in pinned
host memory, nvJPEG decoding, length-ordered token rows; the logits of today's streamed pass within bf16's
rounding. Needs a GPU: skipped elsewhere; run on the GPU machine."""
import backbone_fixtures as fx
import pytest
import torch

from XRM.data.image_datasets import ImageInputs
from XRM.data.image_decoding import DECODING_VARIABLE
from XRM.data.images import load_image_split
from XRM.engine import evaluation_inputs
from XRM.engine.evaluation_inputs import EvaluationInputs, InMemoryRows, LengthSortedTokens
from XRM.engine.memory_budget import free_memory
from XRM.networks.backbones import BackboneSpec
from XRM.networks.classifiers import TextClassifier, build_network

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
CUDA = torch.device("cuda")


def _close(found: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal within bf16's rounding (a few hundredths of the logits' scale), with the same predicted class for at
    least 99% of the examples (other batch shapes round otherwise: a near tie may flip)."""
    scale = float(expected.abs().max())
    agreement = float((found.argmax(dim=-1) == expected.argmax(dim=-1)).float().mean())
    return scale > 0 and float((found - expected).abs().max()) <= 0.03 * scale and agreement >= 0.99


def _both(network, inputs, batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor, EvaluationInputs]:
    prepared = EvaluationInputs(CUDA, 2, "prepared")
    with torch.inference_mode():
        streamed = EvaluationInputs(CUDA, 2, "streamed").predict(inputs, network, batch_size)
        found = prepared.predict(inputs, network, batch_size)
        again = prepared.predict(inputs, network, batch_size)
    assert torch.equal(found, again)  # the prepared inputs are reused as they are
    return found, streamed, prepared


@pytest.mark.parametrize("decoding", ["workers", "device"])
@pytest.mark.parametrize("room_on_device", [True, False])
def test_images_prepared_on_the_device_or_in_pinned_memory(tmp_path, monkeypatch, decoding, room_on_device):
    monkeypatch.setenv(DECODING_VARIABLE, decoding)
    if not room_on_device:  # a device without room: the decoded images go to pinned host memory
        monkeypatch.setattr(evaluation_inputs, "free_memory",
                            lambda device: 0 if device.type == "cuda" else free_memory(device))
    fx.write_waterbirds(tmp_path / "data", with_features=False)
    inputs = ImageInputs(load_image_split(tmp_path / "data", "waterbirds", "tr"))
    torch.manual_seed(0)
    network = build_network("image", (3, 32, 32), 2, {}, BackboneSpec("resnet18", pretrained=False)).to(CUDA).eval()
    torch.nn.init.normal_(network.backbone.fc.weight)
    found, streamed, prepared = _both(network, inputs)
    rows = prepared.prepared[id(inputs)][1]
    assert isinstance(rows, InMemoryRows) and rows.rows.shape == (6, 3, 224, 224)
    assert rows.rows.is_cuda == room_on_device and (room_on_device or rows.rows.is_pinned())
    assert _close(found, streamed)


def test_token_rows_ordered_by_length_on_the_device():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=140, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=128)
    network = TextClassifier(BertModel(config), 3).to(CUDA).eval()
    torch.nn.init.normal_(network.head.weight)
    lengths = torch.randint(2, 64, (700,), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(64)[None] < lengths[:, None]).int()
    tokens = torch.stack([torch.randint(5, 140, mask.shape, dtype=torch.int32) * mask, mask, torch.zeros_like(mask)],
                         dim=-1).to(CUDA)
    found, streamed, prepared = _both(network, tokens, batch_size=256)
    assert isinstance(prepared.prepared[id(tokens)][1], LengthSortedTokens)
    assert found.shape == (700, 3) and _close(found, streamed)
