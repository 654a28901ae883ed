"""How many runs fit one stack: an estimate of a run's memory against what the device has free."""
import os

import torch

from XRM.algorithms import get_algorithm_class
from XRM.engine.batches import input_shape
from XRM.networks.classifiers import TextClassifier, build_network

#: fraction of the free memory a stack may plan to use (the rest: allocator slack, evaluation)
MEMORY_FRACTION = 0.5
#: copies of the parameters a run holds: weights, gradients, two optimiser slots, the best
#: model, and one spare for temporaries
PARAMETER_COPIES = 6
#: copies of a batch's activations held for the backward pass
ACTIVATION_COPIES = 4
#: activation values a BERT layer keeps per token and hidden unit for its backward pass: 17, Korthikanti
#: et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", 34 bytes of 16-bit values
#: per layer, attention scores left out: fused attention keeps none), plus TextStack's float dropout masks
#: (2) and the attention inputs it spreads over rows (3), rounded up
TEXT_ACTIVATION_VALUES = 24
#: steps planned at once (an evaluation period), per run: indices, labels, groups, mask, uniforms
PLANNED_STEP_BYTES = 5 * 8


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _activation_values(network: torch.nn.Module, batch: int, inputs, networks_per_run: int) -> int:
    """How many activation values a training step of ``network`` keeps for its backward pass (an upper
    estimate): a text classifier's per token of a batch of full-length rows of ``inputs`` [n, L, 3]."""
    if isinstance(network, TextClassifier):
        config = network.encoder.config
        tokens = batch * inputs.shape[1]
        return tokens * config.hidden_size * config.num_hidden_layers * TEXT_ACTIVATION_VALUES * networks_per_run
    widths = sum(m.out_features for m in network.modules() if isinstance(m, torch.nn.Linear))
    in_features = next(m.in_features for m in network.modules() if isinstance(m, torch.nn.Linear))
    return batch * (in_features + widths * networks_per_run) * ACTIVATION_COPIES


def run_bytes(member, data, network: torch.nn.Module, dtype: torch.dtype) -> int:
    """An upper estimate of the memory one run of a stack needs while training; ``network`` is one
    network of the stack's architecture (every run of a stack has the same)."""
    cls = get_algorithm_class(member.spec.algorithm)
    hparams = member.setup.hparams
    parameters = sum(p.numel() for p in network.parameters()) * cls.networks_per_run
    batch = hparams["batch_size"]
    activations = _activation_values(network, batch, data.splits["tr"].x, cls.networks_per_run)
    n_train = len(data.splits["tr"])
    state = n_train * (data.num_classes * 2 + 4)  # MAT's shift, XRM's labels and twins, groups
    itemsize = torch.empty((), dtype=dtype).element_size()
    planned = hparams["eval_every"] * batch * PLANNED_STEP_BYTES
    return itemsize * (parameters * PARAMETER_COPIES + activations) + 8 * state + planned


def split_to_fit(members: list, data, stack_size: int | None, device: torch.device, dtype: torch.dtype) -> list[list]:
    """``members`` in consecutive stacks of at most ``stack_size`` runs that fit the device's memory."""
    if not members:
        return []
    network = build_network(data.family, input_shape(data.splits["tr"].x), data.num_classes, members[0].setup.hparams,
                            data.backbone)
    per_run = max(run_bytes(member, data, network, dtype) for member in members)
    capacity = max(1, int(free_memory(device) * MEMORY_FRACTION) // per_run)
    if stack_size is not None:
        capacity = min(capacity, stack_size)
    count = -(-len(members) // capacity)  # stacks of near-equal size
    size = -(-len(members) // count)
    return [members[i : i + size] for i in range(0, len(members), size)]
