"""XRM group inference on a user's own tensors, in memory: phase 1 without files.

The twins train as main.py's phase 1 trains them (the registered XRM algorithm: random
halves, class-balanced loss, label flips) on an XRM.engine.in_memory.InMemoryStack, and the
groups come from the algorithm's own end of phase 1 (XRM.algorithms.xrm.XRM.infer_groups).
"""
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from XRM.common.errors import UserError
from XRM.common.groups import group_ids
from XRM.common.seeds import check_seed
from XRM.engine.in_memory import InMemoryStack, StackRun
from XRM.networks.classifiers import LinearHead
from XRM.results.records import FLIP_RATE
from XRM.runs.hparams import applicable_overrides, check_hparams, default_hparams

#: the hyper-parameters' family when no model factory is given: a linear head on features
FEATURES_FAMILY = "features"


class DegenerateGroupsWarning(UserWarning):
    """XRM's inferred groups leave some class unsplit (InferredGroups.degenerate)."""


DEGENERATE_MESSAGE = (
    "XRM's inferred groups are degenerate: in some class the twins made a cross-mistake on every example or on "
    "none, so the class is one inferred group and its groups tell group-robust training (and selection by "
    "inferred groups) nothing; MAT's held-out logits are still returned. Try more num_steps, a larger "
    "hparams['lr'], another seed or model; flip_rate says how many labels the twins flipped")


@dataclass
class InferredGroups:
    """What XRM infers about a training set (every tensor in example order, on the CPU)."""

    attributes: torch.Tensor  # long [n]: 1 where a twin misclassifies the example (a cross-mistake), else 0
    groups: torch.Tensor  # long [n]: the inferred group id as main.py counts it (2 y + attribute; y if no cross-mistake)
    held_out_logits: torch.Tensor  # float [n, K]: the logits of the twin that did not train on the example
    flip_rate: float  # fraction of training labels the twins flipped by the end
    degenerate: bool  # some class (of the training or given validation examples) is not split into two inferred groups
    validation_attributes: torch.Tensor | None = None  # long [n_va], when validation inputs are given


def check_labelled_tensors(x: torch.Tensor, y: torch.Tensor, name: str = "training") -> int:
    """A UserError naming what is wrong with inputs ``x`` [n, ...] and labels ``y`` [n]; the number
    of classes (max(y) + 1) otherwise."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise UserError(f"the {name} inputs and labels must be torch tensors")
    if x.ndim < 2:
        raise UserError(f"the {name} inputs must be [n, ...], one row per example; got shape {tuple(x.shape)} "
                        "(one feature per example: pass x[:, None])")
    if y.ndim != 1 or y.dtype not in (torch.int32, torch.int64) or len(y) == 0:
        raise UserError(f"the {name} labels must be a non-empty 1-D integer tensor, got {y.dtype} {tuple(y.shape)}")
    if len(x) != len(y):
        raise UserError(f"the {name} set has {len(x)} inputs but {len(y)} labels: give one label per input")
    if int(y.min()) < 0:
        raise UserError(f"the {name} labels must be class indices 0 .. K-1, got {int(y.min())}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise UserError(f"the {name} inputs hold NaN or Inf values: clean or drop those examples")
    return int(y.max()) + 1


def check_validation(x: torch.Tensor, validation_x: torch.Tensor | None, validation_y: torch.Tensor | None,
                     num_classes: int) -> None:
    """A UserError unless validation inputs come with their labels, are shaped as the training
    inputs and hold only the training labels' classes."""
    if (validation_x is None) != (validation_y is None):
        raise UserError("give validation_x and validation_y together, or neither")
    if validation_x is None:
        return
    classes = check_labelled_tensors(validation_x, validation_y, "validation")
    if validation_x.shape[1:] != x.shape[1:]:
        raise UserError(f"the validation inputs are {tuple(validation_x.shape[1:])} per example, the training "
                        f"inputs {tuple(x.shape[1:])}")
    if classes > num_classes:
        raise UserError(f"the validation labels go up to {classes - 1}, but the training labels have {num_classes} "
                        f"classes (0 .. {num_classes - 1})")


def check_model_output(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """One forward pass of ``model`` on the first training example (in eval mode, so that no
    BatchNorm statistics move): a UserError unless it maps [1, ...] to logits [1, num_classes]."""
    parameter = next(model.parameters(), None)
    first = x[:1].to(parameter.device if parameter is not None else x.device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(first)
    except Exception as error:  # the user's module: any failure is theirs to read, in one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(f"the model_factory's model cannot read a training example of shape "
                        f"{tuple(first.shape)}: {type(error).__name__}: {reason}") from None
    finally:
        model.train(training)
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if shape != (1, num_classes):
        raise UserError(f"the model_factory's model maps an example of shape {tuple(first.shape)} to {shape}, but "
                        f"the training labels have {num_classes} classes: it must output logits [B, {num_classes}]")


def xrm_hparams(num_steps: int, overrides: dict | None, family: str = FEATURES_FAMILY) -> dict:
    """The twins' hyper-parameters: the registry's defaults for ``family`` and XRM, ``num_steps``,
    then ``overrides`` (checked: a UserError names a bad or unknown one)."""
    hparams = {**default_hparams(family, "XRM"), "num_steps": num_steps}
    hparams.update(applicable_overrides(overrides or {}, hparams, ["XRM"]))
    check_hparams(hparams)
    return hparams


def infer_groups(
    x: torch.Tensor,
    y: torch.Tensor,
    model_factory: Callable[[], nn.Module] | None = None,
    *,
    num_steps: int = 1001,
    hparams: dict | None = None,
    seed: int = 0,
    validation_x: torch.Tensor | None = None,
    validation_y: torch.Tensor | None = None,
    on_step: Callable[[], None] = lambda: None,
) -> InferredGroups:
    """Train XRM's twins on (x, y) and infer every training example's group and held-out logits.

    ``x`` [n, ...] are inputs on the device to train on, ``y`` [n] class indices 0 .. K-1.
    ``model_factory()`` makes one twin (any nn.Module mapping [B, ...] to logits [B, K]); by
    default a zero-initialised linear head on features, as main.py's phase 1. ``hparams``
    overrides the features defaults (SGD, momentum 0.9, ``lr`` 1e-3, ``batch_size`` 64,
    ``weight_decay`` 1e-4); a ``batch_size`` above n is clamped to n (every step then trains on
    the whole set, as the batch sampler would). The twin assignment, batches and flips are drawn
    from ``seed`` (an integer 0 .. 2**63 - 1). With ``validation_x``/``validation_y`` the
    validation examples' cross-mistakes are inferred too. Every input is checked before training
    (a factory's model by one forward pass on the first example): a UserError says what is wrong.
    Degenerate groups (``InferredGroups.degenerate``) also warn (DegenerateGroupsWarning).
    """
    num_classes = check_labelled_tensors(x, y)
    if num_classes < 2:
        raise UserError("XRM needs at least two classes in the training labels")
    check_validation(x, validation_x, validation_y, num_classes)
    check_seed(seed)
    hparams = xrm_hparams(num_steps, hparams)
    hparams["batch_size"] = min(hparams["batch_size"], len(y))
    factory = model_factory
    if factory is None:
        width = int(torch.tensor(x.shape[1:]).prod())
        factory = lambda: LinearHead(width, num_classes)  # noqa: E731
    with torch.random.fork_rng(devices=[]):  # the twins' initial weights drawn from the seed, as the engine's
        torch.manual_seed(seed)
        twins = [factory(), factory()]
    if model_factory is not None:
        check_model_output(twins[0], x, num_classes)
    stack = InMemoryStack("XRM", x, y.long(), [StackRun(twins, hparams, seed)], num_classes)
    stack.train(hparams["num_steps"], on_step)
    if stack.diverged():
        raise UserError("XRM's twins diverged (their weights are no longer finite): lower hparams['lr']")
    y = y.long().to(stack.device)
    validation_logits, validation_labels = None, None
    if validation_x is not None:
        validation_logits, validation_labels = stack.predict(validation_x), validation_y.long().to(stack.device)
    algorithm = stack.algorithm
    inferred = algorithm.infer_groups(stack.predict(x), stack.state, y, validation_logits, validation_labels)[0]
    if inferred.degenerate:
        warnings.warn(DEGENERATE_MESSAGE, DegenerateGroupsWarning, stacklevel=2)
    validation = inferred.validation_attributes
    return InferredGroups(
        attributes=inferred.train_attributes.cpu(), groups=group_ids(y, inferred.train_attributes).cpu(),
        held_out_logits=inferred.held_out_logits.float().cpu(),
        flip_rate=algorithm.training_metrics(stack.state, y)[FLIP_RATE][0].item(),
        degenerate=inferred.degenerate, validation_attributes=None if validation is None else validation.cpu())
