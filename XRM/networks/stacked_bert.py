"""H runs' BERT text classifiers trained as one stack: their weights stacked [H, ...], one pass for all.

A BERT-base run at the paper's batch sizes (16-64 texts of CivilComments' lengths) leaves most
of a GPU idle. Here H runs of one dataset share each pass: every parameter of their
``TextClassifier`` (encoder and head) is held as one tensor [H, ...], every linear layer is a
batched matrix product [H, T, d] @ [H, d, d'] on each run's packed real tokens
(XRM/networks/stacked_tokens.py), layer norms normalise each token with its own run's scale
and shift, and the attention of all runs' texts is one call (texts are independent rows).
The arithmetic is that of XRM/networks/packed_bert.py for each run, which Hugging Face's
padded pass gives up to rounding (tested in float64, logits and gradients).

Dropout: each run draws its own masks from its own generator, at its own sizes (its packed
token count, its rows, the cache's width), in a fixed order (embeddings; per layer: attention
probabilities, attention output, feed-forward output; the head), so a run's masks do not
depend on the other runs of its stack (tested bitwise in float64). With attention dropout on,
attention is computed as the explicit product (scores, softmax, mask, values): no fused
kernel takes a mask of the caller's; without it, ``scaled_dot_product_attention``.

Built from, and back to, each run's own state_dict: checkpoints keep one run's layout.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from XRM.networks.packed_bert import supports_packing
from XRM.networks.stacked_tokens import StackedTokens


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Each run's linear layer: x [H, n, in], weight [H, out, in], bias [H, out] -> [H, n, out]."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class StackedBert:
    """The classifiers of H runs (each a BERT encoder, dropout, a linear head) as stacked tensors."""

    def __init__(self, classifiers: list[nn.Module]) -> None:
        template = classifiers[0]
        if not all(supports_packing(c.encoder) for c in classifiers):
            raise ValueError("only plain BERT encoders can be stacked (see supports_packing)")
        config = template.encoder.config
        self.probabilities = (config.hidden_dropout_prob, config.attention_probs_dropout_prob, template.dropout.p)
        names = [name for name, _ in template.named_parameters()]
        for classifier in classifiers[1:]:
            other = classifier.encoder.config
            if (other.hidden_dropout_prob, other.attention_probs_dropout_prob, classifier.dropout.p) != self.probabilities \
                    or [(n, p.shape) for n, p in classifier.named_parameters()] != \
                    [(n, p.shape) for n, p in template.named_parameters()]:
                raise ValueError("stacked classifiers must share one architecture and dropout probabilities")
        self.config = config
        self.template = template
        self.parameters = {name: torch.stack([dict(c.named_parameters())[name].detach() for c in classifiers])
                           .clone().requires_grad_(True) for name in names}
        self.training = True

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
        return self.parameters[name]

    def _dense(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return _linear(x, self._p(prefix + ".weight"), self._p(prefix + ".bias"))

    def _norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        normalised = F.layer_norm(x, x.shape[-1:], eps=self.config.layer_norm_eps)
        return normalised * self._p(prefix + ".weight").unsqueeze(1) + self._p(prefix + ".bias").unsqueeze(1)

    def _dropout(self, x: torch.Tensor, p: float, sizes: list[int], generators) -> torch.Tensor:
        """``x`` [H, n, d] with run h's first ``sizes[h]`` rows dropped by a mask from ``generators[h]``
        (drawn [sizes[h], d]; the rows after them, fillers, are dropped whole)."""
        if not (self.training and p):
            return x
        keep = 1 - p
        draws = [F.pad(torch.rand(size, x.shape[-1], generator=generator, device=x.device), (0, 0, 0, x.shape[1] - size),
                       value=1.0) for size, generator in zip(sizes, generators)]
        return x * (torch.stack(draws) < keep) * (1 / keep)

    def _attention_dropout(self, tokens: StackedTokens, generators) -> torch.Tensor | None:
        """Keep masks [rows, heads, width, width] of the attention probabilities, or None (no dropout):
        run h's drawn [its rows, heads, cache width, cache width] and cut to the stack's width; spare rows keep all."""
        p = self.probabilities[1]
        if not (self.training and p):
            return None
        heads, width, device = self.config.num_attention_heads, tokens.width, tokens.tokens.device
        draws = []
        for rows, cache_width, generator in zip(tokens.run_rows, tokens.cache_widths, generators):
            draw = torch.rand(rows, heads, cache_width, cache_width, generator=generator, device=device)
            draws += [draw[:, :, :width, :width], draw.new_zeros(1, heads, width, width)]
        return torch.cat(draws) < 1 - p

    def _attend(self, hidden: torch.Tensor, prefix: str, tokens: StackedTokens, keep: torch.Tensor | None):
        """Self-attention of every run's texts in one call: [H, T, d] before the output projection."""
        runs, size, width = hidden.shape[0], hidden.shape[-1], tokens.width
        heads = self.config.num_attention_heads
        weight = torch.cat([self._p(f"{prefix}.{part}.weight") for part in ("query", "key", "value")], dim=1)
        bias = torch.cat([self._p(f"{prefix}.{part}.bias") for part in ("query", "key", "value")], dim=1)
        qkv = _linear(hidden, weight, bias).flatten(0, 1)
        spread = qkv.new_zeros(tokens.attention_rows * width, 3 * size).index_copy(0, tokens.gather, qkv)
        query, key, value = spread.view(-1, width, 3, heads, size // heads).permute(2, 0, 3, 1, 4).unbind(0)
        if keep is None:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=tokens.key_mask)
        else:
            scores = (query @ key.transpose(-1, -2)) / math.sqrt(size // heads)
            probabilities = scores.masked_fill(~tokens.key_mask, float("-inf")).softmax(dim=-1)
            kept = probabilities * keep * (1 / (1 - self.probabilities[1]))
            context = kept.to(value.dtype) @ value
        context = context.transpose(1, 2).reshape(-1, size).index_select(0, tokens.gather)
        return context.view(runs, -1, size)

    def __call__(self, tokens: StackedTokens, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """Logits [H, B, classes] (B: the largest run's batch; run h's rows past its own batch mean nothing).
        In training with dropout, ``generators[h]`` (on the tokens' device) draws run h's masks."""
        hidden_p, _, head_p = self.probabilities
        sizes = tokens.run_tokens
        ids, types = tokens.tokens[..., 0], tokens.tokens[..., 2]
        runs = ids.shape[0]
        hidden = self._embed("encoder.embeddings.word_embeddings", ids, runs)
        hidden = hidden + self._embed("encoder.embeddings.token_type_embeddings", types, runs)
        hidden = hidden + self._embed("encoder.embeddings.position_embeddings", tokens.positions, runs)
        hidden = self._dropout(self._norm(hidden, "encoder.embeddings.LayerNorm"), hidden_p, sizes, generators)
        for layer in range(self.config.num_hidden_layers):
            prefix = f"encoder.encoder.layer.{layer}"
            context = self._attend(hidden, f"{prefix}.attention.self", tokens, self._attention_dropout(tokens, generators))
            projected = self._dropout(self._dense(context, f"{prefix}.attention.output.dense"), hidden_p, sizes, generators)
            hidden = self._norm(projected + hidden, f"{prefix}.attention.output.LayerNorm")
            inner = ACT2FN[self.config.hidden_act](self._dense(hidden, f"{prefix}.intermediate.dense"))
            output = self._dropout(self._dense(inner, f"{prefix}.output.dense"), hidden_p, sizes, generators)
            hidden = self._norm(output + hidden, f"{prefix}.output.LayerNorm")
        first = hidden.flatten(0, 1).index_select(0, tokens.starts.flatten()).view(runs, -1, hidden.shape[-1])
        pooled = torch.tanh(self._dense(first, "encoder.pooler.dense"))
        logits = self._dense(self._dropout(pooled, head_p, tokens.run_rows, generators), "head")
        return logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 out of bf16 autocast

    def _embed(self, name: str, index: torch.Tensor, runs: int) -> torch.Tensor:
        """Rows ``index`` [H, T] of each run's own table ``name`` [H, n, d]: [H, T, d]."""
        table = self._p(name + ".weight")
        offsets = torch.arange(runs, device=index.device).unsqueeze(1) * table.shape[1]
        return F.embedding(index + offsets, table.flatten(0, 1))
