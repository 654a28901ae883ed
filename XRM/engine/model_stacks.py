"""The models of a stack of H runs, behind one interface the training loop uses.

- ``ParameterStack``: small networks (a linear head, or an MLP: linear layers with ReLU
  between) of H runs, m per run (two for XRM's twins, 15 for DPE's members), as stacked
  tensors [H, m, ...] trained by batched matrix products and a StackedOptimizer: one step
  trains every run. An algorithm's ``head`` may turn a one-layer network's parameters and
  inputs into its outputs in place of the product (DPE's prototype distances).
- ``ModuleStack``: one run's network of any kind (ResNet, BERT), an nn.Module with its
  torch.optim optimiser: a stack of one, for backbones.

Both give logits [H, B, K] (twins: [H, B, K, 2], twin index last) and each run's model
state in the layout of its own nn.Module's state_dict (what best_*.pt holds).
"""
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from XRM.common.errors import UserError
from XRM.engine.evaluation_inputs import EvaluationInputs
from XRM.engine.optimizers import SGD_MOMENTUM, StackedOptimizer, build_lr_scheduler, build_optimizer
from XRM.networks.classifiers import MLP, TwinNetwork, network_prefixes
from XRM.networks.token_batches import TokenBatch

#: evaluation computes at most this many hidden activations at once (elements)
EVALUATION_ELEMENTS = 1 << 26
#: examples per evaluation batch of a backbone whose inputs are streamed (ResNet-50 at 224 px, BERT at 220
#: tokens; prepared inputs size their batches from the free memory: XRM/engine/evaluation_inputs.py)
BACKBONE_EVALUATION_BATCH = 256


def is_stackable(network: nn.Module) -> bool:
    """Whether ``network`` is a small model ParameterStack trains: a linear layer or an MLP."""
    return isinstance(network, (nn.Linear, MLP))


def _linear_layers(network: nn.Module) -> list[tuple[str, nn.Linear]]:
    if isinstance(network, nn.Linear):
        return [("", network)]
    return [(f"{name}.", module) for name, module in network.named_modules() if isinstance(module, nn.Linear)]


def _hparam_tensor(hparams: list[dict], name: str, default: float, dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    return torch.tensor([float(h.get(name, default)) for h in hparams], dtype=dtype, device=device)


class ParameterStack:
    """H runs' small networks as stacked tensors (see the module docstring)."""

    def __init__(self, networks: list[list[nn.Module]], hparams: list[dict], dtype: torch.dtype,
                 device: torch.device, head: Callable | None = None) -> None:
        self.num_runs, self.per_run = len(networks), len(networks[0])
        # a linear network's outputs from its inputs and parameters in place of the product (DPE's
        # prototype distances): head(x [n, D] or [H, B, D], weight [H, m, K, D], bias [H, m, K]) -> [H, m, n or B, K]
        self.head = head
        template = networks[0][0]
        self.layer_names = [prefix for prefix, _ in _linear_layers(template)]
        self.twin_prefixes = network_prefixes(self.per_run)
        self.weights, self.biases = [], []
        for layer in range(len(self.layer_names)):
            modules = [[_linear_layers(net)[layer][1] for net in run] for run in networks]
            self.weights.append(self._stack([[m.weight for m in run] for run in modules], dtype, device))
            has_bias = modules[0][0].bias is not None
            self.biases.append(self._stack([[m.bias for m in run] for run in modules], dtype, device) if has_bias else None)
        parameters = self.parameters()
        decayed = [any(p is w for w in self.weights) for p in parameters]
        self.optimizer = StackedOptimizer(
            hparams[0]["optimizer"], parameters, decayed, _hparam_tensor(hparams, "lr", 0.0, dtype, device),
            _hparam_tensor(hparams, "weight_decay", 0.0, dtype, device),
            _hparam_tensor(hparams, "sgd_momentum", SGD_MOMENTUM, dtype, device), networks_per_run=self.per_run)
        self.best = [p.detach().clone() for p in parameters]
        self.rates = [float(h["lr"]) for h in hparams]

    @staticmethod
    def _stack(tensors: list[list[torch.Tensor]], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        stacked = torch.stack([torch.stack([t.detach() for t in run]) for run in tensors])
        return stacked.to(device=device, dtype=dtype).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        """Every stacked parameter [H, m, ...]."""
        return self.weights + [b for b in self.biases if b is not None]

    def _apply(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        per_run, first = self.per_run, self.weights[0]
        if self.head is not None:  # one layer, turned into outputs by the algorithm's own function
            hidden = self.head(x.flatten(1 if shared else 2).to(first.dtype), first, self.biases[0])
        else:
            hidden = self._layers(x, shared)
        return hidden[:, 0] if per_run == 1 else hidden.permute(0, 2, 3, 1)

    def _layers(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        runs, per_run = self.num_runs, self.per_run
        first, width = self.weights[0], self.weights[0].shape[2]
        if shared:  # [n, D]: one product with every run's first layer at once
            flat = x.flatten(1).to(first.dtype) @ first.reshape(runs * per_run * width, -1).T
            hidden = flat.view(len(x), runs, per_run, width).permute(1, 2, 0, 3)
        else:  # [H, B, D]: each run its own batch; W x^T keeps the weight gradient g x a plain product
            flat = torch.bmm(first.reshape(runs, per_run * width, -1), x.flatten(2).to(first.dtype).transpose(1, 2))
            hidden = flat.view(runs, per_run, width, x.shape[1]).transpose(2, 3)
        for layer, weight in enumerate(self.weights):
            if layer > 0:
                hidden = torch.matmul(F.relu(hidden), weight.transpose(-1, -2))
            if self.biases[layer] is not None:
                hidden = hidden + self.biases[layer][:, :, None, :]
        return hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training logits of each run on its own batch x [H, B, ...]."""
        return self._apply(x, shared=False)

    def last_layers(self, part: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last linear layer of every network of runs ``part``: weight [h, m, K, D], bias [h, m, K]."""
        bias = self.biases[-1]
        return self.weights[-1][part], None if bias is None else bias[part]

    def last_layer(self, part: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last linear layer of runs ``part`` (their first network): weight [h, K, D], bias [h, K]."""
        weight, bias = self.last_layers(part)
        return weight[:, 0], None if bias is None else bias[:, 0]

    @torch.inference_mode()
    def predict(self, inputs: torch.Tensor, once: bool = False) -> torch.Tensor:
        """Every run's logits on every example of ``inputs`` [n, ...], in chunks of examples (``once``: as
        ModuleStack's; tensors in memory need no preparing)."""
        widest = max(w.shape[2] for w in self.weights)
        chunk = max(1, EVALUATION_ELEMENTS // (self.num_runs * self.per_run * widest))
        return torch.cat([self._apply(inputs[i : i + chunk], shared=True) for i in range(0, len(inputs), chunk)], dim=1)

    def learning_rates(self) -> list[float]:
        """Each run's learning rate now (small models train at a constant rate)."""
        return list(self.rates)

    def step(self, loss: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Backpropagate the sum of the runs' losses and update every run (only the networks set in
        ``active`` [H, m], when given; the others stay exactly as they are)."""
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step(active)

    def _state_dict(self, tensors: list[torch.Tensor], member: int) -> dict[str, torch.Tensor]:
        state = {}
        weights, biases = tensors[: len(self.weights)], tensors[len(self.weights):]
        bias_iter = iter(biases)
        for layer, name in enumerate(self.layer_names):
            bias = next(bias_iter) if self.biases[layer] is not None else None
            for twin, prefix in enumerate(self.twin_prefixes):
                state[f"{prefix}{name}weight"] = weights[layer][member, twin].detach().cpu().clone()
                if bias is not None:
                    state[f"{prefix}{name}bias"] = bias[member, twin].detach().cpu().clone()
        return state

    def model_state(self, member: int) -> dict[str, torch.Tensor]:
        """Run ``member``'s network as its nn.Module's state_dict (CPU)."""
        return self._state_dict(self.parameters(), member)

    def best_model_state(self, member: int) -> dict[str, torch.Tensor]:
        """Run ``member``'s network at its best evaluation so far."""
        return self._state_dict(self.best, member)

    def keep_best(self, improved: torch.Tensor) -> None:
        """Remember the current networks of the runs where ``improved`` [H] (bool, on the device) is set."""
        with torch.no_grad():
            for best, parameter in zip(self.best, self.parameters()):
                best.copy_(torch.where(improved.view(-1, *([1] * (best.ndim - 1))), parameter, best))

    def load_member(self, member: int, model: dict, optimizer: dict, best_model: dict | None) -> None:
        """Restore run ``member`` from its checkpoint (and its best network)."""
        with torch.no_grad():
            for tensors, state in ((self.parameters(), model), (self.best, best_model or model)):
                loaded = self._from_state_dict(state)
                for tensor, value in zip(tensors, loaded):
                    tensor[member] = value.to(tensor)
        self.optimizer.load_member_state(member, optimizer)

    def _from_state_dict(self, state: dict) -> list[torch.Tensor]:
        weights, biases = [], []
        for layer, name in enumerate(self.layer_names):
            weights.append(torch.stack([state[f"{prefix}{name}weight"] for prefix in self.twin_prefixes]))
            if self.biases[layer] is not None:
                biases.append(torch.stack([state[f"{prefix}{name}bias"] for prefix in self.twin_prefixes]))
        return weights + biases

    def optimizer_state(self, member: int) -> dict:
        """Run ``member``'s optimiser state (CPU)."""
        return self.optimizer.member_state(member)


class ModuleStack:
    """One run's network of any kind, its torch.optim optimiser and learning-rate schedule (hparam
    ``lr_schedule``, "constant" when absent): a stack of one (backbones).

    The scheduler steps after every optimiser step; its state_dict is saved beside the
    optimiser's in the checkpoint, so a resumed run continues the schedule where it stopped.
    """

    num_runs = 1

    def __init__(self, network: nn.Module, hparams: dict, device: torch.device, num_workers: int | None) -> None:
        self.network = network.to(device)
        self.evaluation_inputs = EvaluationInputs(device, num_workers)
        self.per_run = 2 if isinstance(network, TwinNetwork) else 1
        self.optimizer = build_optimizer(self.network, hparams["optimizer"], hparams["lr"], hparams["weight_decay"],
                                         momentum=hparams.get("sgd_momentum", SGD_MOMENTUM))
        self.schedule = hparams.get("lr_schedule", "constant")
        self.scheduler = build_lr_scheduler(self.optimizer, self.schedule, hparams["num_steps"])
        self.best = self.model_state(0)

    def forward(self, x: "torch.Tensor | TokenBatch") -> torch.Tensor:
        """Training logits [1, B, ...] of the run's batch x [B, ...] (token rows: a TokenBatch)."""
        return self.network(x)[None]

    def set_training_networks(self, active: torch.Tensor) -> None:
        """Twins not set in ``active`` [1, 2] run in evaluation mode (a frozen twin's batch-norm statistics
        stay put and its dropout is off, so it predicts as the model it was frozen as); the others train."""
        for twin, trained in zip(self.network.twins, active[0].tolist()):
            twin.train(trained)

    @torch.inference_mode()
    def predict(self, inputs, once: bool = False) -> torch.Tensor:
        """Logits [1, n, ...] of every example of ``inputs`` (a tensor or a Dataset), in evaluation mode; the
        inputs are prepared at their first evaluation and reused (XRM/engine/evaluation_inputs.py), unless
        ``once`` says they are read this one time."""
        modes = [module.training for module in self.network.modules()]
        self.network.eval()
        try:
            logits = self.evaluation_inputs.predict(inputs, self.network, BACKBONE_EVALUATION_BATCH, once)
        finally:
            for module, mode in zip(self.network.modules(), modes):  # the modes training left them in
                module.training = mode
        return logits[None]

    def step(self, loss: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Backpropagate the run's loss and update it; with ``active`` [1, 2] (twins) only the twins set
        there (a frozen twin's gradients are dropped, so torch.optim leaves it and its state alone;
        reading the mask waits for the device, which a backbone's step can afford)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if active is not None:
            for twin, trained in zip(self.network.twins, active[0].tolist()):
                if not trained:
                    for parameter in twin.parameters():
                        parameter.grad = None
        self.optimizer.step()
        self.scheduler.step()

    def learning_rates(self) -> list[float]:
        """The run's learning rate now, as its schedule has set it (a stack of one)."""
        return [float(self.scheduler.get_last_lr()[0])]

    def model_state(self, member: int) -> dict[str, torch.Tensor]:
        """The network's state_dict (CPU copies)."""
        return {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}

    def best_model_state(self, member: int) -> dict[str, torch.Tensor]:
        """The network at its best evaluation so far."""
        return self.best

    def keep_best(self, improved: torch.Tensor) -> None:
        """Remember the current network if ``improved`` [1] is set."""
        if bool(improved[0]):
            self.best = self.model_state(0)

    def load_member(self, member: int, model: dict, optimizer: dict, best_model: dict | None) -> None:
        """Restore the run from its checkpoint (and its best network); ``optimizer`` is
        :meth:`optimizer_state`'s dict."""
        self.network.load_state_dict(model)
        if "lr_scheduler" not in optimizer:
            # a bare torch.optim state_dict, written before schedules were saved: its run trained at
            # a constant rate, which only a "constant" schedule continues exactly
            if self.schedule != "constant":
                raise UserError(f"this checkpoint has no learning-rate schedule state, and lr_schedule is "
                                f"{self.schedule!r}: delete the run's files to train it again")
            optimizer = {"optimizer": optimizer, "lr_scheduler": self.scheduler.state_dict()}
        self.optimizer.load_state_dict(optimizer["optimizer"])
        self.scheduler.load_state_dict(optimizer["lr_scheduler"])
        self.best = best_model or self.model_state(0)

    def optimizer_state(self, member: int) -> dict:
        """The optimiser's and the learning-rate scheduler's state_dicts."""
        return {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.scheduler.state_dict()}
