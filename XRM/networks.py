"""Networks: zero-initialised linear heads, MLPs, and twin networks for XRM."""
import torch
from torch import nn


class LinearHead(nn.Linear):
    """A linear classifier initialised to zero, as the reference protocol does."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(in_features, num_classes)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class MLP(nn.Module):
    """Flatten, then hidden layers with ReLU, then a zero-initialised linear head."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(LinearHead(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [n, num_classes]."""
        return self.layers(x)


class TwinNetwork(nn.Module):
    """Two independent networks evaluated on the same inputs; logits stacked as [n, K, 2]."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.twins = nn.ModuleList([first, second])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of both twins, twin index last."""
        return torch.stack([twin(x) for twin in self.twins], dim=-1)


def build_network(family: str, input_shape: tuple[int, ...], num_classes: int, hparams: dict | None = None) -> nn.Module:
    """The classifier for a dataset family, sized for inputs of ``input_shape`` (one example)."""
    in_features = int(torch.tensor(input_shape).prod().item())
    if family in ("features", "synthetic"):
        return LinearHead(in_features, num_classes)
    if family == "mlp":
        return MLP(in_features, 390, num_classes)
    raise ValueError(f"no network for dataset family {family!r}")
