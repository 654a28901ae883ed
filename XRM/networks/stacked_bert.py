"""H runs' BERT text classifiers trained as one stack: their weights stacked [H, ...], one pass for all.

A BERT-base run at the paper's batch sizes (16-64 texts of CivilComments' lengths) leaves most
of a GPU idle. Here H runs of one dataset share each pass: every parameter of their
``TextClassifier`` (encoder and head) is held as one tensor [H, ...]; the runs' packed real
tokens follow one another (XRM/networks/stacked_tokens.py: no run is padded to another's size)
and every linear layer multiplies each run's tokens by its own weights in one grouped matrix
product (``torch._grouped_mm``; in float64, which it does not take, and for a classification
head, whose rows it cannot align, one product per run); layer
norms normalise each token with its own run's scale and shift; attention keeps the texts packed
(XRM/networks/jagged_attention.py: each text attends to its own tokens, with no padding to a common
width; where this torch cannot, each text is spread to a row of the token cache's width, its padding
masked), all runs' texts in one call. The arithmetic is that of XRM/networks/packed_bert.py
for each run, which Hugging Face's padded pass gives up to rounding (tested in float64, logits
and gradients, and in float32 through the grouped product).

Dropout: each run draws its own masks from its own generator, at its own sizes (its packed
tokens, its rows, the token cache's width), in a fixed order (every hidden mask of the pass at once,
[its tokens, 1 + 2 x layers, hidden]; each layer's attention probabilities; the head), so a
run's masks do not depend on the other runs of its stack (tested bitwise in float64 and in bf16
autocast). ``scaled_dot_product_attention``
draws its attention dropout from the device's default generator only: with attention dropout
on, each run's texts are attended in a call of their own (shaped by its own texts alone, the same
in any stack), with the run's generator standing in for the default one; without it
(evaluation), all runs' texts in one call.

Under autocast the linear layers' weights and biases (148 stacked tensors for BERT-base) are cast to
its dtype together at the start of a pass, by one multi-tensor copy, not by a cast kernel each; back,
the biases' gradients by one copy too, and each weight's (transposed by its product) straight into
its parameter's layout.

Built from, and back to, each run's own state_dict: checkpoints keep one run's layout.
"""
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from XRM.networks.jagged_attention import jagged_attention, jagged_attention_runs
from XRM.networks.packed_bert import supports_packing
from XRM.networks.stacked_tokens import RowGroups, StackedTokens

#: the dtypes torch._grouped_mm multiplies on the CPU and on CUDA (compute capability 9.0 and later:
#: H100, H200), for rows of a multiple of 16 bytes; other cases (float64, a head of 2 classes, a torch or
#: GPU where a trial product fails: grouped_products_run) take one product per run
GROUPED_DTYPES = {"cpu": (torch.bfloat16, torch.float16, torch.float32), "cuda": (torch.bfloat16,)}


@contextmanager
def _drawing_from(generator: torch.Generator) -> Iterator[None]:
    """Draws from the default generator of ``generator``'s device (the only one a fused attention kernel
    draws its dropout from) come from ``generator``, which then holds the state after them."""
    device = generator.device
    default = torch.default_generator if device.type == "cpu" else torch.cuda.default_generators[device.index or 0]
    saved = default.get_state()
    default.set_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(default.get_state())
        default.set_state(saved)


def _each_run_drawing(generators: list[torch.Generator], attend: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """Each run's attention ``attend(run)`` with run ``run``'s generator standing in for the default one (its
    attention dropout), joined in the runs' order."""
    parts = []
    for run, generator in enumerate(generators):
        with _drawing_from(generator):
            parts.append(attend(run))
    return torch.cat(parts)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matrix product of ``x`` runs in: autocast's where it is on, else ``x``'s."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


@functools.cache
def grouped_products_run(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch multiplies ``dtype`` rows by grouped weights on ``device`` (a trial product of two
    groups): torch._grouped_mm is private, absent from older releases, and takes a GPU of compute capability
    9.0 or later and, on the CPU, a newer torch."""
    if dtype not in GROUPED_DTYPES.get(device.type, ()) or not hasattr(torch, "_grouped_mm"):
        return False
    try:
        rows = torch.ones(32, 16, dtype=dtype, device=device)
        weights = torch.ones(2, 16, 16, dtype=dtype, device=device)
        offsets = torch.tensor([16, 32], dtype=torch.int32, device=device)
        return bool((torch._grouped_mm(rows, weights, offs=offsets) == 16).all())
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _groupable(rows: torch.Tensor, weights: torch.Tensor) -> bool:
    """Whether torch._grouped_mm multiplies ``rows`` by ``weights`` here (see grouped_products_run)."""
    aligned = all(size * rows.element_size() % 16 == 0 for size in weights.shape[1:])
    return aligned and grouped_products_run(rows.device, rows.dtype)


class _EachRowsRun(torch.autograd.Function):
    """Each row's run's entry of a per-run table: a gather forward; backward, each run's rows summed by one
    matrix product (the gather's own backward adds every row into its run's entry atomically: thousands of
    rows into a few entries contend, and bf16 atomics round at every addition)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, groups: RowGroups) -> torch.Tensor:
        ctx.groups = groups
        return table.index_select(0, groups.run_of_row)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.groups.one_hot(gradient.dtype) @ gradient, None


def each_rows_run(table: torch.Tensor, groups: RowGroups) -> torch.Tensor:
    """Rows [N, ...] of a per-run table [H, ...]: row i is the entry of row i's run (``groups``)."""
    return _EachRowsRun.apply(table, groups)


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: RowGroups,
                   grouped: bool = True) -> torch.Tensor:
    """Each run's linear layer on its own rows: x [N, in] (run h's rows as ``groups`` says), weight
    [H, out, in], bias [H, out] -> [N, out], in autocast's dtype where it is on. One grouped product
    where it can (``grouped``), else one product per run."""
    dtype = _compute_dtype(x)
    rows, weights = x.to(dtype), weight.to(dtype).transpose(1, 2)
    if grouped and _groupable(rows, weights):
        product = torch._grouped_mm(rows, weights, offs=groups.offsets)
    else:
        product = torch.cat([rows[part] @ weights[run] for run, part in enumerate(groups.slices())])
    return product + each_rows_run(bias.to(dtype), groups)


class _CastTogether(torch.autograd.Function):
    """Tensors cast to ``dtype`` by one multi-tensor copy; backward, their gradients cast back the same way
    (cast one by one, every weight of a stack costs a kernel launch forward and another back)."""

    @staticmethod
    def forward(ctx, dtype: torch.dtype, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.dtypes = [tensor.dtype for tensor in tensors]
        casts = [torch.empty_like(tensor, dtype=dtype, memory_format=torch.contiguous_format) for tensor in tensors]
        torch._foreach_copy_(casts, [tensor.contiguous() for tensor in tensors])
        return tuple(casts)

    @staticmethod
    def backward(ctx, *gradients: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        # contiguous gradients in one copy; others (a weight's, transposed by its product) each by its own,
        # straight into the contiguous layout its parameter's gradient keeps (no second copy to reorder it)
        casts: list[torch.Tensor | None] = [None] * len(gradients)
        together = []
        for index, gradient in enumerate(gradients):
            if gradient is not None and gradient.is_contiguous():
                together.append(index)
            elif gradient is not None:
                casts[index] = gradient.to(ctx.dtypes[index], memory_format=torch.contiguous_format)
        if together:
            copies = [torch.empty_like(gradients[index], dtype=ctx.dtypes[index]) for index in together]
            torch._foreach_copy_(copies, [gradients[index] for index in together])
            for index, copy in zip(together, copies):
                casts[index] = copy
        return None, *casts


def _signature(classifier: nn.Module) -> tuple:
    """What classifiers stacked together share: dropout probabilities, parameter names and shapes."""
    config = classifier.encoder.config
    shapes = tuple((name, tuple(parameter.shape)) for name, parameter in classifier.named_parameters())
    return config.hidden_dropout_prob, config.attention_probs_dropout_prob, classifier.dropout.p, shapes


class StackedBert:
    """The classifiers of H runs (each a BERT encoder, dropout, a linear head) as stacked tensors;
    ``grouped_products=False``: every linear layer as one product per run (for comparison)."""

    def __init__(self, classifiers: list[nn.Module], grouped_products: bool = True) -> None:
        if not classifiers or not all(supports_packing(c.encoder) for c in classifiers):
            raise ValueError("stack one or more plain BERT classifiers (see supports_packing)")
        if len({_signature(classifier) for classifier in classifiers}) > 1:
            raise ValueError("stacked classifiers must share one architecture and dropout probabilities")
        template = classifiers[0]
        self.config = template.encoder.config
        self.probabilities = (self.config.hidden_dropout_prob, self.config.attention_probs_dropout_prob,
                              template.dropout.p)
        self.parameters = {name: torch.stack([dict(c.named_parameters())[name].detach() for c in classifiers])
                           .requires_grad_(True) for name, _ in template.named_parameters()}
        self.training = True
        self.grouped_products = grouped_products
        # the linear layers' weights and biases: cast to autocast's dtype at each pass (embeddings and layer norms
        # stay as they are: autocast runs them in float32)
        self._linear_names = [name for name in self.parameters if "embeddings" not in name and "LayerNorm" not in name]
        self._compute_weights: dict[str, torch.Tensor] = {}  # during a pass: _cast_weights'
        from transformers.activations import ACT2FN  # here: a sweep of small models never loads transformers

        self.activation = ACT2FN[self.config.hidden_act]

    @property
    def num_runs(self) -> int:
        """How many runs the stack holds."""
        return self.parameters["head.weight"].shape[0]

    def train(self, mode: bool = True) -> "StackedBert":
        """Dropout on (``mode``) or off."""
        self.training = mode
        return self

    def run_state(self, run: int) -> dict[str, torch.Tensor]:
        """Run ``run``'s classifier as its own module's state_dict holds it (copies)."""
        return {name: self.parameters[name][run].detach().clone() for name in self.parameters}

    @torch.no_grad()
    def load_run(self, run: int, state: dict[str, torch.Tensor]) -> None:
        """Put one classifier's state_dict ``state`` in place of run ``run``'s parameters."""
        missing = set(self.parameters) - set(state)
        if missing:
            raise ValueError(f"a state without {sorted(missing)[0]!r} is no classifier of this stack")
        for name, stacked in self.parameters.items():
            stacked[run].copy_(state[name])

    def _p(self, name: str) -> torch.Tensor:
        return self._compute_weights.get(name, self.parameters[name])

    def _cast_weights(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The linear layers' weights and biases in ``dtype``, the dtype their products run in (autocast's), cast
        together; {} where they already are."""
        names = [name for name in self._linear_names if self.parameters[name].dtype != dtype]
        return dict(zip(names, _CastTogether.apply(dtype, *[self.parameters[name] for name in names]))) if names else {}

    def _dense(self, x: torch.Tensor, prefix: str, groups: RowGroups) -> torch.Tensor:
        return grouped_linear(x, self._p(prefix + ".weight"), self._p(prefix + ".bias"), groups, self.grouped_products)

    def _norm(self, x: torch.Tensor, prefix: str, groups: RowGroups) -> torch.Tensor:
        normalised = F.layer_norm(x, x.shape[-1:], eps=self.config.layer_norm_eps)
        scale = each_rows_run(self._p(prefix + ".weight"), groups)
        return torch.addcmul(each_rows_run(self._p(prefix + ".bias"), groups), normalised, scale)

    def _embed(self, name: str, index: torch.Tensor, groups: RowGroups) -> torch.Tensor:
        """Rows ``index`` [N] of each token's run's own table ``name`` [H, n, d]: [N, d]."""
        table = self._p(name + ".weight")
        return F.embedding(index + groups.run_of_row * table.shape[1], table.flatten(0, 1))

    def _keep_masks(self, p: float, rows: int, sites: int, parts: list[slice], generators) -> torch.Tensor | None:
        """Dropout's scaled keep masks [rows, sites, hidden] (1 / (1 - p) or 0; None without dropout): run h's
        rows ``parts[h]``, every site's at once, drawn from ``generators[h]``; other rows (unused) are 0."""
        if not (self.training and p):
            return None
        head = self.parameters["head.weight"]
        masks = torch.zeros(rows, sites, head.shape[-1], dtype=head.dtype, device=head.device)
        for part, generator in zip(parts, generators):
            masks[part].bernoulli_(1 - p, generator=generator)
        return masks.mul_(1 / (1 - p))

    @staticmethod
    def _drop(x: torch.Tensor, masks: torch.Tensor | None, site: int) -> torch.Tensor:
        return x if masks is None else x * masks[:, site]

    def _attend(self, hidden: torch.Tensor, prefix: str, tokens: StackedTokens, generators) -> torch.Tensor:
        """Self-attention of every run's texts: [N, d] before the output projection. One call for
        all runs; with attention dropout, one call per run on its own rows, drawing from its own generator."""
        size, heads = hidden.shape[-1], self.config.num_attention_heads
        dtype = _compute_dtype(hidden)  # cast before joining: a third of the copy in bf16
        weight = torch.cat([self._p(f"{prefix}.{part}.weight").to(dtype) for part in ("query", "key", "value")], 1)
        bias = torch.cat([self._p(f"{prefix}.{part}.bias").to(dtype) for part in ("query", "key", "value")], 1)
        qkv = grouped_linear(hidden, weight, bias, tokens.groups, self.grouped_products)
        p = self.probabilities[1] if self.training else 0.0
        if tokens.shortest_segment and jagged_attention_runs(qkv.device, qkv.dtype):
            query, key, value = qkv.view(-1, 3, heads, size // heads).unbind(1)
            if not p:
                return jagged_attention(query, key, value, tokens.segments).reshape(-1, size)
            # split, not sliced: the backward pass joins the runs' gradients once, with no zeros around each
            counts, segments = tokens.groups.counts, tokens.run_segments
            q, k, v = query.split(counts), key.split(counts), value.split(counts)
            return _each_run_drawing(generators, lambda run: jagged_attention(
                q[run], k[run], v[run], segments[run], p)).reshape(-1, size)
        return self._attend_spread(qkv, tokens, p, generators)

    def _attend_spread(self, qkv: torch.Tensor, tokens: StackedTokens, p: float, generators) -> torch.Tensor:
        """Attention as ``_attend`` gives it, where jagged attention does not run: each text's queries, keys
        and values spread to a row of the token cache's width, its padding masked."""
        size, width, heads = qkv.shape[-1] // 3, tokens.width, self.config.num_attention_heads
        spread = qkv.new_zeros(tokens.attention_rows * width, 3 * size).index_copy(0, tokens.gather, qkv)
        query, key, value = spread.view(-1, width, 3, heads, size // heads).permute(2, 0, 3, 1, 4).unbind(0)
        if not p:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=tokens.key_mask)
        else:  # split, not sliced: the backward pass joins the runs' gradients once, with no zeros around each
            rows = tokens.run_attention_rows()
            q, k, v, masks = query.split(rows), key.split(rows), value.split(rows), tokens.key_mask.split(rows)
            context = _each_run_drawing(generators, lambda run: F.scaled_dot_product_attention(
                q[run], k[run], v[run], attn_mask=masks[run], dropout_p=p))
        return context.transpose(1, 2).reshape(-1, size).index_select(0, tokens.gather)

    def __call__(self, tokens: StackedTokens, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """Logits [H, B, classes] (B: the largest run's batch rounded up; run h's rows past its own batch
        mean nothing). In training with dropout, ``generators[h]`` (on the tokens' device) draws run h's
        masks: first every hidden dropout mask of the pass, then each layer's attention dropout, then the head's."""
        head = self.parameters["head.weight"]
        self._compute_weights = self._cast_weights(_compute_dtype(head))
        try:
            return self._forward(tokens, generators)
        finally:
            self._compute_weights = {}

    def _forward(self, tokens: StackedTokens, generators: list[torch.Generator] | None) -> torch.Tensor:
        hidden_p, _, head_p = self.probabilities
        groups, parts, layers = tokens.groups, tokens.groups.slices(), self.config.num_hidden_layers
        masks = self._keep_masks(hidden_p, len(tokens.positions), 1 + 2 * layers, parts, generators)
        hidden = self._embed("encoder.embeddings.word_embeddings", tokens.tokens[:, 0], groups)
        hidden = hidden + self._embed("encoder.embeddings.token_type_embeddings", tokens.tokens[:, 2], groups)
        hidden = hidden + self._embed("encoder.embeddings.position_embeddings", tokens.positions, groups)
        hidden = self._drop(self._norm(hidden, "encoder.embeddings.LayerNorm", groups), masks, 0)
        for layer in range(layers):
            prefix = f"encoder.encoder.layer.{layer}"
            context = self._attend(hidden, f"{prefix}.attention.self", tokens, generators)
            projected = self._drop(self._dense(context, f"{prefix}.attention.output.dense", groups), masks, 1 + 2 * layer)
            hidden = self._norm(projected + hidden, f"{prefix}.attention.output.LayerNorm", groups)
            inner = self.activation(self._dense(hidden, f"{prefix}.intermediate.dense", groups))
            output = self._drop(self._dense(inner, f"{prefix}.output.dense", groups), masks, 2 + 2 * layer)
            hidden = self._norm(output + hidden, f"{prefix}.output.LayerNorm", groups)
        pooled_groups = tokens.pooled_groups
        first = hidden.index_select(0, tokens.starts)
        pooled = torch.tanh(self._dense(first, "encoder.pooler.dense", pooled_groups))
        texts = [slice(part.start, part.start + rows) for part, rows in zip(pooled_groups.slices(), tokens.run_rows)]
        head_masks = self._keep_masks(head_p, len(tokens.starts), 1, texts, generators)
        logits = self._dense(self._drop(pooled, head_masks, 0), "head", pooled_groups)
        logits = logits.view(len(parts), -1, logits.shape[-1])
        return logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 out of bf16 autocast
