"""BERT's forward pass on packed tokens: no computation on padding at all.

A Hugging Face ``BertModel`` computes every position of its [B, L] inputs, padding included.
Here the same modules (the same parameters, dropout probabilities and activation) run on
the real tokens only, packed end to end ([T, hidden], T = the batch's real tokens): the
embeddings, every linear layer, layer norm and feed-forward block see T rows instead of
B x L. Only attention needs the rows apart: packed queries, keys and values are scattered
into [B, heads, width, head] (width = the batch's longest text), attended with
``scaled_dot_product_attention`` and a key mask, and gathered back. The pooled output is
BERT's pooler on each text's first token.

Padding never changes a real token's value in BERT (masked keys get zero attention), so
the pooled outputs equal those of the padded forward pass up to rounding (tested in
float32 to 1e-5). Used for model_type "bert" encoders; other models run their own
forward pass on trimmed batches.
"""
import torch
import torch.nn.functional as F
from torch import nn

from XRM.networks.token_batches import PackedLayout, TokenBatch


def supports_packing(encoder: nn.Module) -> bool:
    """Whether ``encoder`` is a plain BERT encoder (absolute positions, no decoder, a pooler) that
    :func:`packed_pooled_output` computes exactly."""
    config = getattr(encoder, "config", None)
    return (getattr(config, "model_type", None) == "bert" and not getattr(config, "is_decoder", False)
            and not getattr(config, "add_cross_attention", False)
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "chunk_size_feed_forward", 0)
            and getattr(encoder, "pooler", None) is not None)


def _attention(hidden: torch.Tensor, attention: nn.Module, gather: torch.Tensor, key_mask: torch.Tensor | None,
               rows: int, width: int, heads: int) -> torch.Tensor:
    """Self-attention of packed ``hidden`` [T, H] within each row: [T, H] before BERT's output projection."""
    size = hidden.shape[1]
    qkv = torch.cat([attention.query(hidden), attention.key(hidden), attention.value(hidden)], dim=1)
    spread = qkv.new_zeros(rows * width, 3 * size).index_copy(0, gather, qkv)
    query, key, value = spread.view(rows, width, 3, heads, size // heads).permute(2, 0, 3, 1, 4).unbind(0)
    dropout = attention.dropout.p if attention.training else 0.0
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, dropout_p=dropout)
    return context.transpose(1, 2).reshape(rows * width, size).index_select(0, gather)


def encode_packed(encoder: nn.Module, tokens: torch.Tensor, gather: torch.Tensor, positions: torch.Tensor,
                  starts: torch.Tensor, key_mask: torch.Tensor | None, width: int) -> torch.Tensor:
    """BERT's pooled output [rows, hidden] of packed ``tokens`` [T, 3] (int64 ids, mask, types) laid out as a
    PackedLayout's tensors say (``gather``, ``positions``, ``starts``, ``key_mask``; attention rows of
    ``width``). Tensors in, tensors out, no synchronisation: what a CUDA graph captures."""
    embeddings = encoder.embeddings
    hidden = embeddings.word_embeddings(tokens[:, 0]) + embeddings.token_type_embeddings(tokens[:, 2])
    hidden = embeddings.dropout(embeddings.LayerNorm(hidden + embeddings.position_embeddings(positions)))
    rows = len(starts) if key_mask is None else key_mask.shape[0]
    heads = encoder.config.num_attention_heads
    for layer in encoder.encoder.layer:
        context = _attention(hidden, layer.attention.self, gather, key_mask, rows, width, heads)
        projection = layer.attention.output
        hidden = projection.LayerNorm(projection.dropout(projection.dense(context)) + hidden)
        inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(hidden))
        hidden = layer.output.LayerNorm(layer.output.dropout(layer.output.dense(inner)) + hidden)
    first = hidden.index_select(0, starts)
    return encoder.pooler.activation(encoder.pooler.dense(first))


def layout_tensors(batch: TokenBatch, layout: PackedLayout) -> tuple[torch.Tensor, ...]:
    """The tensors :func:`encode_packed` reads for ``batch`` packed as ``layout`` says (all but the width)."""
    return batch.packed(layout).long(), layout.gather, layout.positions, layout.starts, layout.key_mask()


def packed_pooled_output(encoder: nn.Module, batch: TokenBatch) -> torch.Tensor:
    """BERT's pooled output [B, hidden] of every row of ``batch``, computed on its real tokens only."""
    layout = batch.layout()
    return encode_packed(encoder, *layout_tensors(batch, layout), layout.width)
