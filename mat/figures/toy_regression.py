"""The toy regression of the paper's Figure 3: good, bad and ugly memorisation.

A 1-D target is fitted from a few noisy points. Each training input is ``[x, eps]``
where ``eps`` is an example-specific random vector of scale ``sigma``: the network can
memorise a point's label noise through its ``eps`` instead of bending the function of x.
The learned function is read with ``eps = 0``, as for a new input:
- good (small sigma): the noise is memorised through eps, and f(x) stays smooth;
- bad (larger sigma): eps carries everything, f(x) is left poorly fitted;
- ugly (sigma = 0): no eps to use, so f(x) itself bends to pass through the noise.
"""
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from mat.figures.full_batch_fit import FitResult, fit_full_batch, predict
from XRM.common.search_space import NON_NEGATIVE, POSITIVE, at_least, check_values
from XRM.common.seeds import check_seed

TRAIN_RANGE = (-1.5, 1.5)  # where the training points lie
MSE_RANGE = (-1.2, 1.2)  # where the learned function is scored (away from the edges)
MSE_GRID_POINTS = 241  # a step of 0.01 over MSE_RANGE
PROBE_GRID_POINTS = 301  # a step of 0.01 over TRAIN_RANGE, for plotting the fits
DEFAULT_SIGMAS = {"good": 1e-4, "bad": 1e-3, "ugly": 0.0}


def target_function(x: torch.Tensor) -> torch.Tensor:
    """The true function f(x) = tanh(x) + 0.5 tanh(-5x), elementwise."""
    return torch.tanh(x) + 0.5 * torch.tanh(-5.0 * x)


def inputs_at(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Network inputs ``[x, eps]`` (shape [n, 1 + eps_dim]) from x [n] and eps [n, eps_dim]."""
    return torch.cat([x.unsqueeze(-1), eps], dim=-1)


def grid_inputs(low: float, high: float, n_points: int, eps_dim: int) -> torch.Tensor:
    """Evenly spaced x in [low, high] with ``eps = 0``: how the learned function is read."""
    x = torch.linspace(low, high, n_points)
    return inputs_at(x, torch.zeros(n_points, eps_dim))


def probe_x() -> torch.Tensor:
    """The x positions of the probe grid on which ``FitResult.snapshots`` are recorded."""
    return torch.linspace(*TRAIN_RANGE, PROBE_GRID_POINTS)


@dataclass
class TrainingSet:
    """Training inputs ``[x, eps]`` [n, 1 + eps_dim] and noisy targets f(x) + noise [n, 1]."""

    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def x(self) -> torch.Tensor:
        """The 1-D positions of the training points, [n]."""
        return self.inputs[:, 0]


def make_training_set(
    n_train: int, eps_dim: int, sigma: float, noise_std: float, seed: int
) -> TrainingSet:
    """``n_train`` evenly spaced points on TRAIN_RANGE with label noise N(0, noise_std^2)
    and eps ~ N(0, sigma^2 I).

    For one seed, the label noise and the direction of every eps are the same whatever
    sigma is, so the good, bad and ugly runs differ only in the scale of eps.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.linspace(*TRAIN_RANGE, n_train)
    label_noise = noise_std * torch.randn(n_train, generator=generator)
    eps = sigma * torch.randn(n_train, eps_dim, generator=generator)
    targets = (target_function(x) + label_noise).unsqueeze(-1)
    return TrainingSet(inputs=inputs_at(x, eps), targets=targets)


def make_mlp(in_dim: int, hidden: int, seed: int) -> nn.Sequential:
    """The paper's regressor: in_dim -> hidden -> hidden -> 1 with tanh, initialised from
    ``seed`` without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(in_dim, hidden), nn.Tanh(),
            nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, 1),
        )


def mse_to_target(x: torch.Tensor, predictions: torch.Tensor) -> float:
    """Mean squared error between ``predictions`` at the points ``x`` and the true f(x)."""
    return (predictions - target_function(x)).square().mean().item()


def function_mse(model: nn.Module, eps_dim: int) -> float:
    """Mean squared error between the learned function (eps = 0) and the true one on
    MSE_GRID_POINTS evenly spaced x in MSE_RANGE: the number the paper reports."""
    device = next(model.parameters()).device
    grid = grid_inputs(*MSE_RANGE, MSE_GRID_POINTS, eps_dim).to(device)
    return mse_to_target(grid[:, 0], predict(model, grid))


def snapshot_mse(snapshot: torch.Tensor) -> float:
    """``function_mse`` read from one snapshot on the probe grid (whose points inside
    MSE_RANGE are the MSE grid's, up to rounding), for titles of animation frames."""
    x = probe_x()
    tolerance = 1e-6  # float32 linspace may land a hair outside the range's ends
    inside = (x >= MSE_RANGE[0] - tolerance) & (x <= MSE_RANGE[1] + tolerance)
    return mse_to_target(x[inside], snapshot[inside])


#: which values of ExperimentConfig's settings can run (finite numbers: inf or NaN gave NaN metrics)
SETTING_BOUNDS = {"n_train": at_least(2), "eps_dim": at_least(1), "hidden": at_least(1), "epochs": at_least(1),
                  "check_every": at_least(1), "lr": POSITIVE, "noise_std": NON_NEGATIVE, "loss_threshold": NON_NEGATIVE}


@dataclass
class ExperimentConfig:
    """Everything the good / bad / ugly experiment varies (defaults: the paper's)."""

    sigmas: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SIGMAS))
    n_train: int = 20
    eps_dim: int = 30
    noise_std: float = 0.08
    hidden: int = 300
    lr: float = 1e-3
    epochs: int = 100_000  # at most; a case stops early once its loss < loss_threshold
    loss_threshold: float = 1e-6
    check_every: int = 50
    seed: int = 0

    def check(self) -> None:
        """Raise UserError naming the first setting that cannot run."""
        for name, sigma in self.sigmas.items():  # 0 is allowed: the ugly case has no eps
            NON_NEGATIVE.check(f"sigma of '{name}'", sigma)
        check_values(asdict(self), SETTING_BOUNDS)
        check_seed(self.seed)


@dataclass
class CaseMetrics:
    """The numbers metrics.json holds for one case (the field names are its keys)."""

    sigma: float
    epochs: int
    train_loss: float
    mse: float

    def as_dict(self) -> dict[str, float | int]:
        """The metrics as a JSON-ready dict."""
        return asdict(self)


@dataclass
class CaseResult:
    """One case's training data, its training run and its metrics."""

    training_set: TrainingSet
    fit: FitResult
    metrics: CaseMetrics


def run_case(
    config: ExperimentConfig,
    sigma: float,
    device: torch.device,
    on_check: Callable[[int, float], None] | None = None,
) -> CaseResult:
    """Train one regressor on data with eps scale ``sigma`` until it memorises its
    training set, recording its fit on the probe grid (TRAIN_RANGE, eps = 0)."""
    data = make_training_set(config.n_train, config.eps_dim, sigma, config.noise_std, config.seed)
    # Same seed for every case: the three runs start from the same network.
    model = make_mlp(1 + config.eps_dim, config.hidden, config.seed).to(device)
    probe = inputs_at(probe_x(), torch.zeros(PROBE_GRID_POINTS, config.eps_dim))
    fit = fit_full_batch(
        model, data.inputs.to(device), data.targets.to(device), probe.to(device),
        lr=config.lr, max_epochs=config.epochs, loss_threshold=config.loss_threshold,
        check_every=config.check_every, on_check=on_check,
    )
    metrics = CaseMetrics(sigma=sigma, epochs=fit.epochs, train_loss=fit.train_loss,
                          mse=function_mse(model, config.eps_dim))
    return CaseResult(training_set=data, fit=fit, metrics=metrics)
