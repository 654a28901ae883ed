"""Figure 1 of the paper: ERM memorises the minority through example-specific noise, MAT does not.

The data is the construction of XRM/data/synthetic.py (the built-in Synthetic dataset):
x = [x_y, x_a, noise], a weak core feature x_y ~ +-1, a strong spurious feature x_a ~ +-5
that points to the wrong class for the minority (10% of training, 50% of test examples),
and ``noise_dim`` dimensions of N(0, sigma^2) noise, different for every example.
A linear model without bias is trained full-batch with plain SGD in three runs:

- ``ERM_sigma0``: ERM with sigma = 0. Nothing to memorise with, so fitting the minority
  forces the model onto x_y: it generalises to the test minority.
- ``ERM_sigma``: ERM with sigma > 0. The minority is fitted through its noise (memorised),
  the model keeps relying on x_a, and the test minority is misclassified.
- ``MAT_sigma``: the library's XRM twins give every training example held-out logits
  (phase 1), then the library's MAT trains with the memorisation-aware shift (phase 2).

Each run is trained by the pieces main.py trains with (XRM.engine.in_memory.InMemoryStack): the
registered algorithm's loss and state, a ParameterStack of one run with its stacked
optimiser, and (for XRM's label flips) the StepUniforms of the run's seed. Only the loop
differs: the whole training set is every batch, and accuracies are recorded every epoch.
"""
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from mat.figures.full_batch_fit import one_cpu_thread
from XRM.algorithms import get_algorithm_class
from XRM.common.search_space import POSITIVE, Bound, at_least, check_values
from XRM.common.seeds import check_seed
from XRM.data.base import SplitTensors
from XRM.data.synthetic import SpuriousDataSpec, make_spurious_split
from XRM.engine.in_memory import InMemoryStack, StackRun
from XRM.results.records import FLIP_RATE

TRAIN_MINORITY_FRACTION = 0.1
TEST_MINORITY_FRACTION = 0.5
NUM_CLASSES = 2
#: the columns of ``RunResult.accuracies``, also the accuracy keys of metrics.json
ACCURACY_KEYS = ("maj_tr", "min_tr", "maj_te", "min_te")
#: run name -> (algorithm, whether the data has noise of scale sigma or none)
RUNS = {"ERM_sigma0": ("ERM", False), "ERM_sigma": ("ERM", True), "MAT_sigma": ("MAT", True)}

#: called after every full-batch step, e.g. to move a progress bar
StepCallback = Callable[[], None]


#: which values of InterpretableConfig's settings can run (finite numbers: inf or NaN give NaN
#: accuracies); n >= 20 leaves at least two training examples in the 10% minority
SETTING_BOUNDS = {"sigma": Bound("a finite number > 0 (the sigma = 0 run is always included)", POSITIVE.accepts),
                  "lr": POSITIVE, "lr_sigma0": POSITIVE, "tau": POSITIVE, "epochs": at_least(1),
                  "xrm_epochs": at_least(1), "n": at_least(20), "noise_dim": at_least(1)}


@dataclass
class InterpretableConfig:
    """Everything the experiment varies (defaults: the reference script's settings)."""

    sigma: float = 0.5  # the reference trains with 0.5 (its titles say 1)
    epochs: int = 1000
    lr: float = 1e-2
    lr_sigma0: float = 3e-2  # the ERM run without noise
    tau: float = 0.1
    xrm_epochs: int = 1000
    n: int = 1000  # examples per split
    noise_dim: int = 1798  # 2 + 1798 = the paper's d = 1800
    seed: int = 0

    def check(self) -> None:
        """Raise UserError naming the first setting that cannot run."""
        check_values(dataclasses.asdict(self), SETTING_BOUNDS)
        check_seed(self.seed)


def make_splits(config: InterpretableConfig, sigma: float) -> tuple[SplitTensors, SplitTensors]:
    """Training and test splits with noise scale ``sigma``, on the CPU.

    For one seed, labels, x_y, x_a, the minority and the noise directions are the same
    whatever sigma is: the runs with and without noise see the same two features.
    """
    generator = torch.Generator().manual_seed(config.seed)

    def split(minority_fraction: float) -> SplitTensors:
        spec = SpuriousDataSpec(n=config.n, minority_fraction=minority_fraction,
                                noise_dim=config.noise_dim, noise_std=sigma)
        return make_spurious_split(spec, generator)

    return split(TRAIN_MINORITY_FRACTION), split(TEST_MINORITY_FRACTION)


def make_linear(in_features: int) -> nn.Linear:
    """The paper's model: a linear classifier without bias, initialised to zero."""
    network = nn.Linear(in_features, NUM_CLASSES, bias=False)
    nn.init.zeros_(network.weight)
    return network


def sgd_hparams(lr: float, tau: float) -> dict:
    """A run's hyper-parameters: plain full-batch SGD, as the reference trains."""
    return {"optimizer": "sgd", "sgd_momentum": 0.0, "lr": lr, "weight_decay": 0.0, "tau": tau}


class GroupCorrect:
    """Numbers of correctly classified majority and minority examples of one split, as one
    product with no host sync (boolean indexing would wait for the device every epoch)."""

    def __init__(self, split: SplitTensors) -> None:
        self.y = split.y
        majority = split.a == split.y
        self.membership = torch.stack([majority, ~majority], dim=1).float()

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """[majority correct, minority correct] of ``logits`` [n, K] (whole numbers, float)."""
        return (logits.argmax(dim=1) == self.y).float() @ self.membership

    def sizes(self) -> torch.Tensor:
        """[majority size, minority size]."""
        return self.membership.sum(dim=0)


@dataclass
class RunResult:
    """One run's history: row e of ``accuracies`` (columns ACCURACY_KEYS) and of
    ``plane_weights`` is the model after e epochs (row 0: the initial model).

    ``plane_weights[e]`` is the weight matrix [K, 2] on (x_y, x_a): the model's logits in
    that plane with the noise at 0, from which the decision boundary is drawn.
    """

    name: str
    sigma: float
    accuracies: torch.Tensor  # float64 [epochs + 1, 4], CPU
    plane_weights: torch.Tensor  # float [epochs + 1, K, 2], CPU
    train: SplitTensors  # the training split (CPU), for the points of the boundary plot

    def metrics(self) -> dict[str, float]:
        """metrics.json's entry: sigma and the final model's accuracies."""
        final = dict(zip(ACCURACY_KEYS, self.accuracies[-1].tolist()))
        return {"sigma": self.sigma, **final}


@dataclass
class TwinSummary:
    """How well the XRM twins found the minority: their final flip rate, and the precision
    and recall of the cross-mistakes (inferred attribute 1) for the true minority."""

    flip_rate: float
    precision: float
    recall: float


class FullBatchRun(InMemoryStack):
    """One run of a registered algorithm, trained full-batch as main.py trains a run: its
    loss and state over a ParameterStack of one run (the bias-free zero-initialised linear
    model, twice for XRM's twins), every training example in every step's batch."""

    def __init__(self, algorithm_name: str, train: SplitTensors, hparams: dict, seed: int,
                 held_out_logits: torch.Tensor | None = None) -> None:
        networks = [make_linear(train.x.shape[1]) for _ in range(get_algorithm_class(algorithm_name).networks_per_run)]
        super().__init__(algorithm_name, train.x, train.y, [StackRun(networks, hparams, seed, full_batch=True)],
                         NUM_CLASSES, attributes=train.a, held_out_logits=held_out_logits)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The run's evaluation logits on ``x`` [n, D]: [n, K] ([n, K, 2] for XRM's twins)."""
        return super().predict(x)[0]

    def plane_weights(self) -> torch.Tensor:
        """The weights [K, 2] on (x_y, x_a) of the run's (first) network."""
        return self.model.weights[0][0, 0, :, :2]


def train_twins(
    train: SplitTensors, config: InterpretableConfig, on_step: StepCallback
) -> tuple[torch.Tensor, TwinSummary]:
    """Phase 1: the library's XRM on the whole training set for ``xrm_epochs`` full-batch steps.

    Returns every training example's held-out logits [n, K] and a TwinSummary.
    """
    twins = FullBatchRun("XRM", train, sgd_hparams(config.lr, config.tau), config.seed)
    for step in range(config.xrm_epochs):
        twins.step(step)
        on_step()
    groups = twins.algorithm.infer_groups(twins.predict(train.x)[None], twins.state, train.y)[0]
    held_out, inferred = groups.held_out_logits, groups.train_attributes.bool()
    minority = train.a != train.y
    found = (inferred & minority).sum().item()
    summary = TwinSummary(flip_rate=twins.algorithm.training_metrics(twins.state, train.y)[FLIP_RATE][0].item(),
                          precision=found / max(inferred.sum().item(), 1),
                          recall=found / minority.sum().item())
    return held_out, summary


def train_recorded(
    run: FullBatchRun, train: SplitTensors, test: SplitTensors, epochs: int, on_step: StepCallback
) -> tuple[torch.Tensor, torch.Tensor]:
    """``epochs`` full-batch steps of ``run``, recording after each the group accuracies on
    both splits and the weights on (x_y, x_a); returned on the CPU."""
    device = train.y.device
    train_correct, test_correct = GroupCorrect(train), GroupCorrect(test)
    # counts, not fractions, until the end: sums of 0/1 are exact in float32
    correct = torch.empty(epochs + 1, len(ACCURACY_KEYS), device=device)
    plane_weights = torch.empty(epochs + 1, NUM_CLASSES, 2, device=device)

    def record(epoch: int) -> None:
        with torch.no_grad():
            correct[epoch, :2] = train_correct(run.predict(train.x))
            correct[epoch, 2:] = test_correct(run.predict(test.x))
            plane_weights[epoch] = run.plane_weights()

    record(0)
    for epoch in range(1, epochs + 1):
        run.step(epoch - 1)
        record(epoch)
        on_step()
    sizes = torch.cat([train_correct.sizes(), test_correct.sizes()])
    return (correct.double() / sizes.double()).cpu(), plane_weights.cpu()


def run(
    name: str, config: InterpretableConfig, device: torch.device, on_step: StepCallback = lambda: None
) -> tuple[RunResult, TwinSummary | None]:
    """One of RUNS, trained on ``device``; MAT's run also returns its twins' TwinSummary."""
    algorithm_name, noisy = RUNS[name]
    sigma = config.sigma if noisy else 0.0
    lr = config.lr if noisy else config.lr_sigma0
    train, test = (split.to(device) for split in make_splits(config, sigma))
    with one_cpu_thread(device):
        held_out, summary = None, None
        if algorithm_name == "MAT":
            held_out, summary = train_twins(train, config, on_step)
        trained = FullBatchRun(algorithm_name, train, sgd_hparams(lr, config.tau), config.seed, held_out)
        accuracies, plane_weights = train_recorded(trained, train, test, config.epochs, on_step)
    return RunResult(name, sigma, accuracies, plane_weights, train.to("cpu")), summary


def total_epochs(config: InterpretableConfig) -> int:
    """Full-batch steps of the whole experiment (every run, and the twins), for a progress bar."""
    return len(RUNS) * config.epochs + config.xrm_epochs
