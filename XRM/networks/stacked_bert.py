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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from XRM.networks.jagged_attention import jagged_attention, jagged_attention_runs
from XRM.networks.packed_bert import supports_packing
from XRM.networks.per_run_ops import cast_together, compute_dtype, each_rows_run, grouped_linear
from XRM.networks.stacked_tokens import RowGroups, StackedTokens

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


@dataclass
class PassRows:
    """What the stages of a stacked pass read besides their activations: whose each token row is, each text's
    first token, the pooled rows' runs, and the dropout masks (None without dropout; the head's drawn last)."""

    groups: RowGroups
    starts: torch.Tensor
    pooled_groups: RowGroups
    masks: torch.Tensor | None = None
    head_masks: torch.Tensor | None = None


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
        self.parameters = {name: nn.Parameter(torch.stack([dict(c.named_parameters())[name].detach() for c in classifiers]))
                           for name, _ in template.named_parameters()}
        self.training = True
        self.grouped_products = grouped_products
        # the linear layers' weights and biases: cast to autocast's dtype at each pass (embeddings and layer norms
        # stay as they are: autocast runs them in float32)
        self._linear_names = [name for name in self.parameters if "embeddings" not in name and "LayerNorm" not in name]
        self._compute_weights: dict[str, torch.Tensor] = {}  # during a stage: _cast_weights'
        self._stage_names = self._names_of_stages()
        if sorted(name for names in self._stage_names for name in names) != sorted(self.parameters):
            raise ValueError("a stacked BERT's parameters must each belong to one stage of its pass")
        linear = set(self._linear_names)
        self._stage_linear_names = [[name for name in names if name in linear] for names in self._stage_names]
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

    def _cast_weights(self, dtype: torch.dtype, names: list[str]) -> dict[str, torch.Tensor]:
        """The linear layers' weights and biases ``names`` in ``dtype``, the dtype their products run in
        (autocast's), cast together; {} where they already are."""
        names = [name for name in names if self.parameters[name].dtype != dtype]
        return dict(zip(names, cast_together(dtype, [self.parameters[name] for name in names]))) if names else {}

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

    def _keep_masks(self, p: float, rows: int, sites: int, parts: list[slice], generators,
                    out: torch.Tensor | None = None) -> torch.Tensor | None:
        """Dropout's scaled keep masks [rows, sites, hidden] (1 / (1 - p) or 0; None without dropout): run h's
        rows ``parts[h]``, every site's at once, drawn from ``generators[h]``; other rows (unused) are 0, or as
        they were in ``out`` (drawn into, where given)."""
        if not (self.training and p):
            return None
        head = self.parameters["head.weight"]
        masks = torch.zeros(rows, sites, head.shape[-1], dtype=head.dtype, device=head.device) if out is None else out
        for part, generator in zip(parts, generators):
            masks[part].bernoulli_(1 - p, generator=generator).mul_(1 / (1 - p))
        return masks

    @staticmethod
    def _drop(x: torch.Tensor, masks: torch.Tensor | None, site: int) -> torch.Tensor:
        return x if masks is None else x * masks[:, site]

    def _qkv(self, hidden: torch.Tensor, layer: int, groups: RowGroups) -> torch.Tensor:
        """Layer ``layer``'s queries, keys and values of every token, [T, 3 x hidden], by one product."""
        prefix = f"encoder.encoder.layer.{layer}.attention.self"
        dtype = compute_dtype(hidden)  # cast before joining: a third of the copy in bf16
        weight = torch.cat([self._p(f"{prefix}.{part}.weight").to(dtype) for part in ("query", "key", "value")], 1)
        bias = torch.cat([self._p(f"{prefix}.{part}.bias").to(dtype) for part in ("query", "key", "value")], 1)
        return grouped_linear(hidden, weight, bias, groups, self.grouped_products)

    def attention(self, qkv: torch.Tensor, tokens: StackedTokens, generators) -> torch.Tensor:
        """Self-attention of every run's texts on queries, keys and values ``qkv`` [T, 3d]: [T, d] before the
        output projection. One call for all runs; with attention dropout, one call per run on its own rows,
        drawing from its own generator. Rows past ``tokens``' own (a fixed layout's fillers) attend to nothing:
        their context is 0."""
        size, heads = qkv.shape[-1] // 3, self.config.num_attention_heads
        extra = qkv.shape[0] - len(tokens.positions)
        qkv = qkv[: len(tokens.positions)] if extra else qkv
        p = self.probabilities[1] if self.training else 0.0
        if tokens.shortest_segment and jagged_attention_runs(qkv.device, qkv.dtype):
            query, key, value = qkv.view(-1, 3, heads, size // heads).unbind(1)
            if not p:
                context = jagged_attention(query, key, value, tokens.segments).reshape(-1, size)
            else:  # split, not sliced: the backward pass joins the runs' gradients once, with no zeros around each
                counts, segments = tokens.groups.counts, tokens.run_segments
                q, k, v = query.split(counts), key.split(counts), value.split(counts)
                context = _each_run_drawing(generators, lambda run: jagged_attention(
                    q[run], k[run], v[run], segments[run], p)).reshape(-1, size)
        else:
            context = self._attend_spread(qkv, tokens, p, generators)
        return F.pad(context, (0, 0, 0, extra)) if extra else context

    def _attend_spread(self, qkv: torch.Tensor, tokens: StackedTokens, p: float, generators) -> torch.Tensor:
        """Attention as ``attention`` gives it, where jagged attention does not run: each text's queries, keys
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

    @property
    def num_stages(self) -> int:
        """How many stages a pass has: the embeddings' and one after each layer's attention."""
        return self.config.num_hidden_layers + 1

    def stage_parameter_names(self, stage: int) -> list[str]:
        """The stacked parameters stage ``stage`` reads (see :meth:`stage`)."""
        return self._stage_names[stage]

    def _names_of_stages(self) -> list[list[str]]:
        layers = self.config.num_hidden_layers

        def layer(index: int, attention: bool) -> list[str]:
            prefix = f"encoder.encoder.layer.{index}."
            return [name for name in self.parameters
                    if name.startswith(prefix) and (".attention.self." in name) == attention]

        first = [name for name in self.parameters if name.startswith("encoder.embeddings.")] + layer(0, True)
        last = layer(layers - 1, False) + [name for name in self.parameters if name.startswith(("encoder.pooler.", "head."))]
        return [first, *[layer(index - 1, False) + layer(index, True) for index in range(1, layers)], last]

    def stage(self, stage: int, rows: PassRows, *inputs: torch.Tensor):
        """One stage of a pass, everything between two attentions: stage 0 takes the token rows [T, 3] and their
        positions [T] and gives the embeddings' hidden states and layer 0's queries, keys and values; stage l
        (0 < l < layers) takes layer l - 1's attention context and its hidden states in, and gives layer l's
        hidden states and queries, keys and values; the last stage ends the last layer and gives the logits
        [H, B, classes]. ``rows`` says whose each row is and holds the dropout masks."""
        self._compute_weights = self._cast_weights(compute_dtype(self.parameters["head.weight"]),
                                                   self._stage_linear_names[stage])
        try:
            if stage == 0:
                hidden = self._embeddings(*inputs, rows)
            else:
                hidden = self._layer_end(stage - 1, *inputs, rows)
            if stage < self.config.num_hidden_layers:
                return hidden, self._qkv(hidden, stage, rows.groups)
            return self._logits(hidden, rows)
        finally:
            self._compute_weights = {}

    def _embeddings(self, ids_and_types: torch.Tensor, positions: torch.Tensor, rows: PassRows) -> torch.Tensor:
        groups = rows.groups
        hidden = self._embed("encoder.embeddings.word_embeddings", ids_and_types[:, 0], groups)
        hidden = hidden + self._embed("encoder.embeddings.token_type_embeddings", ids_and_types[:, 2], groups)
        hidden = hidden + self._embed("encoder.embeddings.position_embeddings", positions, groups)
        return self._drop(self._norm(hidden, "encoder.embeddings.LayerNorm", groups), rows.masks, 0)

    def _layer_end(self, layer: int, context: torch.Tensor, hidden: torch.Tensor, rows: PassRows) -> torch.Tensor:
        """Layer ``layer`` after its attention: the output projection, the feed-forward block, their norms."""
        prefix, groups, masks = f"encoder.encoder.layer.{layer}", rows.groups, rows.masks
        projected = self._drop(self._dense(context, f"{prefix}.attention.output.dense", groups), masks, 1 + 2 * layer)
        hidden = self._norm(projected + hidden, f"{prefix}.attention.output.LayerNorm", groups)
        inner = self.activation(self._dense(hidden, f"{prefix}.intermediate.dense", groups))
        output = self._drop(self._dense(inner, f"{prefix}.output.dense", groups), masks, 2 + 2 * layer)
        return self._norm(output + hidden, f"{prefix}.output.LayerNorm", groups)

    def _logits(self, hidden: torch.Tensor, rows: PassRows) -> torch.Tensor:
        pooled_groups = rows.pooled_groups
        first = hidden.index_select(0, rows.starts)
        pooled = torch.tanh(self._dense(first, "encoder.pooler.dense", pooled_groups))
        logits = self._dense(self._drop(pooled, rows.head_masks, 0), "head", pooled_groups)
        logits = logits.view(len(pooled_groups.ends), -1, logits.shape[-1])
        return logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 out of bf16 autocast

    def hidden_masks(self, tokens: StackedTokens, generators, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """Every hidden dropout mask of a pass, each run's drawn from its generator (into ``out``, if given)."""
        sites = 1 + 2 * self.config.num_hidden_layers
        rows = len(tokens.positions) if out is None else len(out)
        return self._keep_masks(self.probabilities[0], rows, sites, tokens.groups.slices(), generators, out)

    def head_masks(self, tokens: StackedTokens, generators, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """The head's dropout masks of a pass, each run's drawn from its generator (into ``out``, if given)."""
        texts = [slice(part.start, part.start + rows)
                 for part, rows in zip(tokens.pooled_groups.slices(), tokens.run_rows)]
        return self._keep_masks(self.probabilities[2], len(tokens.starts), 1, texts, generators, out)

    def __call__(self, tokens: StackedTokens, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """Logits [H, B, classes] (B: the largest run's batch rounded up; run h's rows past its own batch
        mean nothing). In training with dropout, ``generators[h]`` (on the tokens' device) draws run h's
        masks: first every hidden dropout mask of the pass, then each layer's attention dropout, then the head's."""
        rows = PassRows(tokens.groups, tokens.starts, tokens.pooled_groups, self.hidden_masks(tokens, generators))
        return self.run_stages(self.stage, rows, tokens, generators, (tokens.tokens, tokens.positions))

    def run_stages(self, stage: Callable, rows: PassRows, tokens: StackedTokens, generators,
                   first_inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """A pass: ``stage(index, rows, *inputs)`` (:meth:`stage`, or its replay) for each stage, each layer's
        attention between two stages, the head's masks drawn (into ``rows.head_masks``) before the last."""
        hidden, qkv = stage(0, rows, *first_inputs)
        for layer in range(self.config.num_hidden_layers):
            context = self.attention(qkv, tokens, generators)
            if layer + 1 < self.config.num_hidden_layers:
                hidden, qkv = stage(layer + 1, rows, context, hidden)
        rows.head_masks = self.head_masks(tokens, generators, rows.head_masks)
        return stage(self.config.num_hidden_layers, rows, context, hidden)
