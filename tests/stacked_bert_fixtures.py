"""A tiny BERT classifier and token batches in the token cache's layout, for the stacked-BERT tests."""
import torch
import torch.nn.functional as F

from XRM.networks.classifiers import TextClassifier
from XRM.networks.token_batches import TokenBatch

WIDTH = 60
#: three runs' batches of 7, 3 and 4 texts: 257, 49 and 46 real tokens
RUN_LENGTHS = [[5, 40, 60, 2, 33, 57, 60], [12, 7, 30], [1, 22, 9, 14]]
#: the three runs' batches of four steps (288, 384, 400 and 288 packed tokens)
STEP_LENGTHS = [[[5, 40, 2, 33, 57, 60, 9], [12, 7, 3], [1, 22, 9, 4]], RUN_LENGTHS,
                [[5, 40, 60, 2, 33, 57, 60], [12, 7, 30, 19], [1, 22, 9, 14]],
                [[5, 40, 2, 33, 57, 60, 9], [12, 7, 3], [1, 22, 9, 4]]]


def tiny_classifier(seed: int, layers: int = 2, dropout: float = 0.0, dtype: torch.dtype = torch.float64) -> TextClassifier:
    """A 2-layer (``layers``), 32-wide BERT classifier of 3 classes with random weights drawn from ``seed``
    (a random head, not BERT's zeros: it would hide every difference), in ``dtype``."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=140, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    network = TextClassifier(BertModel(config), 3, dropout=dropout)
    torch.nn.init.normal_(network.head.weight)
    return network.to(dtype)


def token_batch(lengths: list[int], seed: int) -> TokenBatch:
    """Rows of ``lengths`` real tokens (random ids and types, drawn from ``seed``), right-padded to WIDTH."""
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.arange(WIDTH)[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(5, 140, (len(lengths), WIDTH), generator=generator) * mask
    types = torch.randint(0, 2, (len(lengths), WIDTH), generator=generator) * mask
    return TokenBatch.measured(torch.stack([ids, mask, types], dim=-1).int())


def labels(count: int, seed: int) -> torch.Tensor:
    """``count`` random labels of 3 classes, drawn from ``seed``."""
    return torch.randint(0, 3, (count,), generator=torch.Generator().manual_seed(seed))


def stacked_loss(logits: torch.Tensor, labels: list[torch.Tensor]) -> torch.Tensor:
    """The sum of the runs' own mean cross-entropies (run h's gradient is its own loss's)."""
    return sum(F.cross_entropy(logits[run, : len(y)], y) for run, y in enumerate(labels))
