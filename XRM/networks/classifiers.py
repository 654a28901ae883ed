"""Networks: zero-initialised linear heads, MLPs, ResNet and BERT classifiers, and twin networks for XRM."""
import os

import torch
from torch import nn

from XRM.common.errors import UserError
from XRM.networks.backbones import (DEFAULT_IMAGE_BACKBONE, DEFAULT_TEXT_MODEL, BackboneSpec, build_text_encoder,
                                    build_torchvision_backbone)
from XRM.networks.graphed_passes import GraphedPasses
from XRM.networks.packed_bert import packed_pooled_output, supports_packing
from XRM.networks.packed_bert_graphs import PackedGraphs
from XRM.networks.pixels import normalise_pixels, pixel_statistics
from XRM.networks.token_batches import TokenBatch

#: dataset families whose networks are small (a head, an MLP): their runs train as stacks
STACKED_FAMILIES = ("features", "synthetic", "mlp")


class LinearHead(nn.Linear):
    """A linear classifier initialised to zero, as the reference protocol does."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(in_features, num_classes)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class MLP(nn.Module):
    """Flatten, then hidden layers with ReLU, then a linear head; every layer, the head
    included, starts from xavier_uniform weights and zero biases, as the reference's MLP."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [n, num_classes]."""
        return self.layers(x)


def bf16_on_cuda(x: torch.Tensor) -> torch.autocast:
    """bf16 autocast for a backbone's forward pass when its input is on CUDA (a no-op on CPU).

    Only the forward pass: the loss, the backward pass and the optimiser step run outside
    it, as PyTorch recommends, and logits leave the backbone in float32.
    """
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda)


class ImageClassifier(nn.Module):
    """A torchvision ResNet whose ``fc`` is a zero-initialised head; channels_last and bf16 on CUDA. After
    :meth:`use_cuda_graphs`, the training pass on uint8 batches of one shape replays CUDA graphs."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        backbone.fc = LinearHead(backbone.fc.in_features, num_classes)
        # A layout, not a device: harmless on CPU, and the fast path of cuDNN convolutions in bf16.
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.graphs: GraphedPasses | None = None

    def use_cuda_graphs(self, batch_shape: tuple[int, ...], compiled: bool = False) -> None:
        """On CUDA, capture now the training pass (forward and backward) on uint8 pixel batches of
        ``batch_shape`` [B, 3, H, W], compiled first where ``compiled``, and replay it for every such batch in
        training from then on (XRM/networks/graphed_passes.py). Captured here, at set-up, not at the first
        batch: a capture forbids CUDA calls from other threads, and a loader's threads bring the batches."""
        device = next(self.parameters()).device
        if device.type != "cuda":
            return
        self.graphs = GraphedPasses(_PixelPass(self.backbone, pixel_statistics(device)), compiled)
        pixels = torch.randint(0, 256, batch_shape, dtype=torch.uint8, device=device)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        training = self.training
        self.train(True)
        self.graphs.capture(_graph_key(pixels, True), (pixels,))
        self.train(training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [n, num_classes] of images [n, 3, H, W]: normalised floats, or uint8 pixels that are
        normalised here, on the device (a quarter of the bytes to copy there)."""
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.graphs is not None and torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            key = _graph_key(x, self.training)
            if self.graphs.replays(key):
                return self.graphs(key, (x,))  # captured with its own autocast, float32 out
        if x.dtype == torch.uint8:
            x = normalise_pixels(x)
        with bf16_on_cuda(x):
            return self.backbone(x).float()


def _graph_key(x: torch.Tensor, training: bool) -> tuple:
    """What an image pass's capture depends on: the batch's shape, dtype and layout, and the mode."""
    return tuple(x.shape), x.dtype, x.is_contiguous(memory_format=torch.channels_last), training


class _PixelPass(nn.Module):
    """uint8 pixels normalised (with statistics on the device) then ``backbone``: the pass a graph captures."""

    def __init__(self, backbone: nn.Module, statistics: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.backbone = backbone
        self.statistics = statistics

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The backbone's logits of ``pixels``."""
        return self.backbone(normalise_pixels(pixels, self.statistics))


#: dropout before the text head: bert-base-uncased's hidden_dropout_prob, which
#: BertForSequenceClassification (the reference's network) applies to the pooled output
TEXT_HEAD_DROPOUT = 0.1


#: how text batches meet padding: "pack" (default: a BERT encoder runs on the real tokens only,
#: others on batches cut to their longest text), "trim" (each batch cut to its longest text) or
#: "pad" (every batch at the token cache's width); all three give the same logits. On CUDA a
#: packed BERT's training pass is replayed from CUDA graphs (XRM/networks/packed_bert_graphs.py; README, Benchmarks)
TEXT_PACKING_VARIABLE = "XRM_TEXT_PACKING"
TEXT_PACKING_MODES = ("pack", "trim", "pad")


def text_packing() -> str:
    """``$XRM_TEXT_PACKING`` (default pack); a UserError for a value not in TEXT_PACKING_MODES."""
    value = os.environ.get(TEXT_PACKING_VARIABLE, "pack")
    if value not in TEXT_PACKING_MODES:
        raise UserError(f"{TEXT_PACKING_VARIABLE}={value}: use pack (the default), trim or pad")
    return value


class TextClassifier(nn.Module):
    """A transformers encoder, dropout (0.1 unless given), and a zero-initialised head on the pooled
    output, as BertForSequenceClassification; bf16 on CUDA.

    Inputs are token tensors [n, L, 3] (input ids, attention mask and token type ids, the
    layout of the reference: MultiNLI's cached features, CivilComments' tokens), or a
    TokenBatch of them whose real lengths are known on the host. ``XRM_TEXT_PACKING`` says
    how padding is met: for a BERT encoder the real tokens packed end to end (``pack``, the
    default, ``XRM/networks/packed_bert.py``), each batch cut to its longest text (``trim``, and
    ``pack`` for other encoders), or kept (``pad``); the logits are the same. After
    :meth:`use_cuda_graphs`, a packed training pass on CUDA replays CUDA graphs.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = TEXT_HEAD_DROPOUT) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = LinearHead(encoder.config.hidden_size, num_classes)
        self.padding = text_packing()
        self.packs = supports_packing(encoder) and self.padding == "pack"
        self.graphs: PackedGraphs | None = None

    def use_cuda_graphs(self) -> None:
        """Replay the encoder's packed training pass from CUDA graphs where it runs (see XRM/networks/packed_bert_graphs.py)."""
        if self.packs:
            self.graphs = PackedGraphs(self.encoder)

    def pooled(self, batch: TokenBatch) -> torch.Tensor:
        """The encoder's pooled output [n, hidden] of ``batch``, computed without padding."""
        if self.packs and batch.right_padded:
            return packed_pooled_output(self.encoder, batch)
        x = (batch.tokens if self.padding == "pad" else batch.trimmed()).long()  # cached as int32, widened per batch
        return self.encoder(input_ids=x[..., 0], attention_mask=x[..., 1], token_type_ids=x[..., 2]).pooler_output

    def forward(self, x: torch.Tensor | TokenBatch) -> torch.Tensor:
        """Logits [n, num_classes] of token rows (a tensor is measured first: one synchronisation)."""
        batch = x if isinstance(x, TokenBatch) else TokenBatch.measured(x)
        graphed = (self.graphs is not None and batch.right_padded and batch.tokens.is_cuda
                   and torch.is_grad_enabled() and not torch.is_inference_mode_enabled())
        pooled = self.graphs(batch) if graphed else None  # captured with its own autocast
        with bf16_on_cuda(batch.tokens):
            if pooled is None:
                pooled = self.pooled(batch)
            return self.head(self.dropout(pooled)).float()


def use_cuda_graphs(network: nn.Module, image_batch_shape: tuple[int, ...] | None = None,
                    compile_images: bool = False) -> None:
    """Let every text classifier in ``network`` replay its packed training passes from CUDA graphs on CUDA,
    and every image classifier its training pass on uint8 batches of ``image_batch_shape``, captured now
    (compiled first where ``compile_images``)."""
    for module in network.modules():
        if isinstance(module, TextClassifier):
            module.use_cuda_graphs()
        elif isinstance(module, ImageClassifier) and image_batch_shape is not None:
            module.use_cuda_graphs(image_batch_shape, compile_images)


class TwinNetwork(nn.Module):
    """Two independent networks evaluated on the same inputs; logits stacked as [n, K, 2]."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.twins = nn.ModuleList([first, second])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of both twins, twin index last."""
        return torch.stack([twin(x) for twin in self.twins], dim=-1)


def network_prefixes(networks_per_run: int) -> list[str]:
    """Where each network of a run keeps its keys in the run's state_dict: "" for a run of one network, its
    TwinNetwork's ``twins.<j>.`` for each of several."""
    return [f"twins.{j}." for j in range(networks_per_run)] if networks_per_run > 1 else [""]


def build_network(family: str, input_shape: tuple[int, ...], num_classes: int, hparams: dict | None = None,
                  backbone: BackboneSpec | None = None) -> nn.Module:
    """The classifier for a dataset family, sized for inputs of ``input_shape`` (one example).

    ``backbone`` chooses the pretrained model of the "image" and "text" families (default:
    ResNet-50 and bert-base-uncased with pretrained weights).
    """
    in_features = int(torch.tensor(input_shape).prod().item())
    if family in ("features", "synthetic"):
        return LinearHead(in_features, num_classes)
    if family == "mlp":
        return MLP(in_features, 390, num_classes)
    if family == "image":
        return ImageClassifier(build_torchvision_backbone(backbone or BackboneSpec(DEFAULT_IMAGE_BACKBONE)), num_classes)
    if family == "text":
        dropout = (hparams or {}).get("last_layer_dropout", TEXT_HEAD_DROPOUT)
        return TextClassifier(build_text_encoder(backbone or BackboneSpec(DEFAULT_TEXT_MODEL)), num_classes, dropout)
    raise ValueError(f"no network for dataset family {family!r}")
