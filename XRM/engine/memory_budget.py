"""How many runs fit one stack: an estimate of a run's memory against what the device has free."""
import os

import torch

from XRM.algorithms import get_algorithm_class
from XRM.engine.batches import input_shape
from XRM.networks.classifiers import TextClassifier, build_network
from XRM.networks.jagged_attention import jagged_attention_runs

#: fraction of the free memory a stack may plan to use (the rest: allocator slack, evaluation)
MEMORY_FRACTION = 0.5
#: copies of the parameters a run holds: weights, gradients, two optimiser slots, the best
#: model, and one spare for temporaries
PARAMETER_COPIES = 6
#: copies of a batch's activations held for the backward pass
ACTIVATION_COPIES = 4
#: activation values a BERT layer keeps per real token and hidden unit for its backward pass when the
#: tokens are packed: 17, Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
#: Models", 34 bytes of 16-bit values per layer, attention scores left out: fused attention keeps none), plus
#: TextStack's float dropout masks (2), rounded up
PACKED_TOKEN_VALUES = 20
#: values per attention position (a text's row of the token cache's width, every position, fillers too) and
#: hidden unit a packed layer keeps where its attention spreads the texts to rows (where jagged attention does
#: not run): the queries, keys and values spread over the rows, and the attention's output there
ATTENTION_POSITION_VALUES = 4
#: activation values per token and hidden unit of a BERT layer on full-length rows (not packed): the two
#: above together, every position a token
TEXT_ACTIVATION_VALUES = PACKED_TOKEN_VALUES + ATTENTION_POSITION_VALUES
#: a batch's packed tokens are planned at their mean plus this many standard deviations of a sum of that
#: many lengths drawn from the split (exceeded at a step with probability under 1e-9, by the normal bound)
TOKEN_SPREAD = 6.0
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


def packed_tokens_bound(inputs: torch.Tensor, batch: int) -> int:
    """The real tokens a batch of ``batch`` rows drawn from the token rows ``inputs`` [n, L, 3] is planned to
    hold: ``batch`` x mean length + TOKEN_SPREAD x sqrt(``batch``) x the lengths' standard deviation, at most
    ``batch`` x L."""
    lengths = inputs[..., 1].sum(dim=1, dtype=torch.float64)
    spread = lengths.std().item() if len(lengths) > 1 else 0.0
    planned = batch * lengths.mean().item() + TOKEN_SPREAD * batch ** 0.5 * spread
    return min(int(planned) + 1, batch * inputs.shape[1])


def _activation_values(network: torch.nn.Module, batch: int, inputs, networks_per_run: int,
                       spread_attention: bool) -> int:
    """How many activation values a training step of ``network`` keeps for its backward pass (an upper
    estimate): a text classifier's per real token of a packed batch of token rows ``inputs`` [n, L, 3] (and,
    where ``spread_attention``, per position of its attention rows: each text's, and a spare one), or per
    position of full-length rows."""
    if isinstance(network, TextClassifier):
        config = network.encoder.config
        if network.packs:
            per_layer = packed_tokens_bound(inputs, batch) * PACKED_TOKEN_VALUES
            if spread_attention:
                per_layer += (batch + 1) * inputs.shape[1] * ATTENTION_POSITION_VALUES
        else:  # every position of full-length rows
            per_layer = batch * inputs.shape[1] * TEXT_ACTIVATION_VALUES
        return per_layer * config.hidden_size * config.num_hidden_layers * networks_per_run
    widths = sum(m.out_features for m in network.modules() if isinstance(m, torch.nn.Linear))
    in_features = next(m.in_features for m in network.modules() if isinstance(m, torch.nn.Linear))
    return batch * (in_features + widths * networks_per_run) * ACTIVATION_COPIES


def activation_dtype(network: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype a run's activations are kept in: bf16 for a text backbone on CUDA (its forward pass runs under
    bf16 autocast, XRM/networks/classifiers.py's ``bf16_on_cuda``), else the run's ``dtype``."""
    return torch.bfloat16 if isinstance(network, TextClassifier) and device.type == "cuda" else dtype


def network_bytes(network: torch.nn.Module, networks_per_run: int, batch: int, inputs, dtype: torch.dtype,
                  device: torch.device) -> int:
    """An upper estimate of what a run's networks (``networks_per_run`` like ``network``) hold on ``device``
    while training in a stack on batches of ``batch`` rows of ``inputs``: PARAMETER_COPIES of their parameters
    in ``dtype``, and a step's activations in ``activation_dtype`` (a stacked text pass attends its packed
    texts where jagged attention runs, else spreads them to rows)."""
    parameters = sum(p.numel() for p in network.parameters()) * networks_per_run
    kept = activation_dtype(network, device, dtype)
    spread = isinstance(network, TextClassifier) and not jagged_attention_runs(device, kept)
    activations = _activation_values(network, batch, inputs, networks_per_run, spread)
    size = torch.empty((), dtype=dtype).element_size()
    return size * parameters * PARAMETER_COPIES + torch.empty((), dtype=kept).element_size() * activations


def run_bytes(member, data, network: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> int:
    """An upper estimate of the memory one run of a stack needs while training; ``network`` is one
    network of the stack's architecture (every run of a stack has the same)."""
    cls = get_algorithm_class(member.spec.algorithm)
    hparams = member.setup.hparams
    batch = hparams["batch_size"]
    n_train = len(data.splits["tr"])
    state = n_train * (data.num_classes * 2 + 4)  # MAT's shift, XRM's labels and twins, groups
    planned = hparams["eval_every"] * batch * PLANNED_STEP_BYTES
    return network_bytes(network, cls.networks_per_run, batch, data.splits["tr"].x, dtype, device) + 8 * state + planned


def split_to_fit(members: list, data, stack_size: int | None, device: torch.device, dtype: torch.dtype) -> list[list]:
    """``members`` in consecutive stacks of at most ``stack_size`` runs that fit the device's memory."""
    if not members:
        return []
    network = build_network(data.family, input_shape(data.splits["tr"].x), data.num_classes, members[0].setup.hparams,
                            data.backbone)
    per_run = max(run_bytes(member, data, network, dtype, device) for member in members)
    capacity = max(1, int(free_memory(device) * MEMORY_FRACTION) // per_run)
    if stack_size is not None:
        capacity = min(capacity, stack_size)
    count = -(-len(members) // capacity)  # stacks of near-equal size
    size = -(-len(members) // count)
    return [members[i : i + size] for i in range(0, len(members), size)]
