"""Full-batch regression training until the training set is memorised, with snapshots.

Small problems (a few dozen points) are dominated by per-step overhead, so the loop
never reads a value back to the host inside a step: the loss is compared with the
threshold (one ``.item()``) only every ``check_every`` steps, which is also when a
snapshot of the model's predictions on fixed probe inputs is kept for animations.
"""
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FitResult:
    """What one training run leaves behind.

    ``snapshot_epochs[k]`` is the number of optimisation steps taken when the probe
    predictions ``snapshots[k]`` were recorded; entry 0 is the initial model and the last
    entry is the final model, so ``snapshots[-1]`` is what the trained model predicts.
    """

    epochs: int
    train_loss: float
    snapshot_epochs: list[int]
    snapshots: torch.Tensor  # float [n_snapshots, n_probe], on the CPU


def predict(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model's scalar outputs on ``inputs`` as a 1-D tensor, without building a graph."""
    with torch.no_grad():
        return model(inputs).squeeze(-1)


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run CPU work in this block on one intra-op thread, then restore the thread count.

    Operations on a few dozen rows gain little from a second thread, and when another
    process holds a core every operation waits on the OpenMP barrier: measured on 2 shared
    cores, one step took 0.7 ms on one thread against 20-60 ms on two.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_full_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    probe_inputs: torch.Tensor,
    *,
    lr: float,
    max_epochs: int,
    loss_threshold: float,
    check_every: int,
    on_check: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train ``model`` with Adam on the mean squared error over all of ``inputs`` at once.

    One epoch is one full-batch step. Training stops after ``max_epochs`` steps, or at the
    first check (every ``check_every`` steps) where the loss is below ``loss_threshold``.
    ``on_check(epochs_done, loss)`` is called at every check, e.g. to move a progress bar.
    All tensors must be on the model's device; on the CPU the loop runs on one thread.
    """
    with one_cpu_thread(inputs.device):
        # fused: one kernel for the whole Adam update (CPU and CUDA from torch 2.4); at
        # this size the optimiser step costs more than the forward and backward passes.
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
        snapshot_epochs = [0]
        snapshots = [predict(model, probe_inputs)]
        epoch = 0
        while epoch < max_epochs:
            loss = nn.functional.mse_loss(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch += 1
            if epoch % check_every == 0 or epoch == max_epochs:
                snapshot_epochs.append(epoch)
                snapshots.append(predict(model, probe_inputs))
                loss_value = loss.item()  # the only host synchronisation of the loop
                if on_check is not None:
                    on_check(epoch, loss_value)
                if loss_value < loss_threshold:
                    break
        # The loss checked above predates the last step; report the final model's.
        final_loss = nn.functional.mse_loss(predict(model, inputs), targets.squeeze(-1)).item()
    return FitResult(
        epochs=epoch,
        train_loss=final_loss,
        snapshot_epochs=snapshot_epochs,
        snapshots=torch.stack(snapshots).cpu(),
    )
