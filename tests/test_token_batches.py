"""Text batches without padding: packed and trimmed BERT forward passes give the padded batch's logits."""
import pytest
import torch

from XRM.common.errors import UserError
from XRM.networks.classifiers import TextClassifier
from XRM.networks.packed_bert import encode_packed, layout_tensors
from XRM.networks.packed_bert_graphs import TOKEN_BUCKET, bucket_size
from XRM.networks.token_batches import PackedLayout, TokenBatch, TokenRows, measure_rows

LENGTHS = [5, 40, 17, 2, 33, 1]


def _tiny_classifier(layers: int = 2, packing: str = "pack") -> TextClassifier:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=140, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=256)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XRM_TEXT_PACKING", packing)
        network = TextClassifier(BertModel(config), 3)
    torch.nn.init.normal_(network.head.weight)  # a zero head would hide every difference
    return network.eval()


def _tokens(lengths: list[int], width: int = 60, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(5, 140, (len(lengths), width), generator=generator) * mask
    types = torch.randint(0, 2, (len(lengths), width), generator=generator) * mask
    return torch.stack([ids, mask, types], dim=-1).int()


def _padded_logits(network: TextClassifier, x: torch.Tensor) -> torch.Tensor:
    """Hugging Face's own forward pass on every position of the padded rows, as before."""
    x = x.long()
    output = network.encoder(input_ids=x[..., 0], attention_mask=x[..., 1], token_type_ids=x[..., 2])
    return network.head(output.pooler_output)


@torch.no_grad()
def test_packed_and_trimmed_rows_give_the_padded_logits():
    network = _tiny_classifier()
    x = _tokens(LENGTHS)
    padded = _padded_logits(network, x)
    assert network.packs and padded.abs().min() > 1e-3
    packed = network(x)
    assert packed.shape == (6, 3) and (packed - padded).abs().max() < 1e-5
    network.packs = False  # the path of other encoders: the batch cut to its longest text (40 of 60)
    assert (network(x) - padded).abs().max() < 1e-5
    # rows in another order give their logits in that order
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    network.packs = True
    assert (network(x[order]) - padded[order]).abs().max() < 1e-5


@torch.no_grad()
def test_each_padding_mode_gives_the_padded_logits_and_bert_packs_only_when_asked():
    x = _tokens(LENGTHS)
    logits = {}
    for mode in ("pad", "trim", "pack"):
        network = _tiny_classifier(1, packing=mode)
        assert network.packs == (mode == "pack")
        logits[mode] = network(x)
    reference = _padded_logits(network, x)
    assert all((value - reference).abs().max() < 1e-5 for value in logits.values())
    with pytest.raises(UserError, match="XRM_TEXT_PACKING=squeeze: use pack"):
        _tiny_classifier(1, packing="squeeze")


@torch.no_grad()
def test_rows_that_are_not_right_padded_are_trimmed_with_their_mask():
    network = _tiny_classifier(layers=1)
    x = _tokens(LENGTHS)
    x[1, 7, 1] = 0  # a hole inside row 1: its real tokens are no prefix
    lengths, right_padded = measure_rows(x)
    assert lengths.tolist() == LENGTHS and not right_padded
    assert TokenBatch.measured(x).trimmed().shape == (6, 40, 3)
    assert (network(x) - _padded_logits(network, x)).abs().max() < 1e-5


def test_a_batch_of_rows_reads_lengths_on_the_host_and_packs_exactly():
    x = _tokens(LENGTHS)
    rows = TokenRows(x)
    batch = rows.batch(torch.tensor([4, 0, 3]), torch.tensor([4, 0, 3]))
    assert batch.lengths.tolist() == [33, 5, 2] and batch.width == 33 and batch.trimmed().shape == (3, 33, 3)
    layout = batch.layout()
    assert layout.starts.tolist() == [0, 33, 38] and layout.positions[33:40].tolist() == [0, 1, 2, 3, 4, 0, 1]
    expected = torch.cat([x[4, :33], x[0, :5], x[3, :2]])
    assert torch.equal(batch.packed(), expected)
    assert layout.key_mask()[:, 0, 0].sum(dim=1).tolist() == [33, 5, 2]
    assert PackedLayout.of(torch.tensor([4, 4]), torch.tensor([4, 4])).key_mask() is None  # nothing to mask


def test_training_on_packed_rows_matches_the_padded_gradients():
    network = _tiny_classifier(layers=1)
    x, y = _tokens(LENGTHS), torch.tensor([0, 1, 2, 0, 1, 2])
    gradients = []
    for logits in (lambda: network(TokenRows(x).batch(torch.arange(6), torch.arange(6))),
                   lambda: _padded_logits(network, x)):
        network.zero_grad()
        torch.nn.functional.cross_entropy(logits(), y).backward()
        gradients.append(torch.cat([p.grad.flatten() for p in network.parameters() if p.grad is not None]))
    assert gradients[0].abs().max() > 1e-3 and (gradients[0] - gradients[1]).abs().max() < 1e-5


def test_token_inputs_of_another_shape_are_refused():
    from XRM.common.errors import UserError

    with pytest.raises(UserError, match=r"token inputs must be \[n, length, 3\].*delete the token cache"):
        TokenBatch.measured(torch.zeros(2, 5, dtype=torch.int32))


def test_a_fixed_size_layout_puts_fillers_in_a_spare_row_and_changes_no_logit_or_gradient():
    """What a CUDA graph captures: the real tokens padded to a fixed count, over rows of the cache's width."""
    network = _tiny_classifier(layers=2)
    x, y = _tokens(LENGTHS), torch.tensor([0, 1, 2, 0, 1, 2])
    batch = TokenRows(x).batch(torch.arange(6), torch.arange(6))
    layout = batch.fixed_layout(60, 130)  # 98 real tokens, 32 fillers; rows 60 wide (the batch's longest: 40)
    assert (layout.filler, layout.attention_rows, len(layout.gather)) == (32, 7, 130)
    assert layout.gather[98:].tolist() == [6 * 60] * 32 and layout.positions[98:].tolist() == [0] * 32
    mask = layout.key_mask()
    assert mask.shape == (7, 1, 1, 60) and mask[:, 0, 0].sum(dim=1).tolist() == [*LENGTHS, 1]
    tokens = batch.packed(layout)
    assert tokens.shape == (130, 3) and torch.equal(tokens[:98], batch.packed()) and not tokens[98:].any()
    gradients, outputs = [], []
    for pooled in (lambda: encode_packed(network.encoder, *layout_tensors(batch, layout), 60),
                   lambda: network.encoder(input_ids=x[..., 0].long(), attention_mask=x[..., 1].long(),
                                           token_type_ids=x[..., 2].long()).pooler_output):
        network.zero_grad()
        logits = network.head(pooled())
        torch.nn.functional.cross_entropy(logits, y).backward()
        outputs.append(logits.detach())
        gradients.append(torch.cat([p.grad.flatten() for p in network.parameters() if p.grad is not None]))
    assert (outputs[0] - outputs[1]).abs().max() < 1e-5
    assert gradients[0].abs().max() > 1e-3 and (gradients[0] - gradients[1]).abs().max() < 1e-5
    with pytest.raises(ValueError, match="do not fit"):
        batch.fixed_layout(60, 97)  # fewer places than real tokens


def test_packed_token_counts_round_up_to_a_bucket_and_never_past_the_padded_batch():
    assert [bucket_size(n, 32, 220) for n in (1, TOKEN_BUCKET, TOKEN_BUCKET + 1, 2112)] == \
        [TOKEN_BUCKET, TOKEN_BUCKET, 2 * TOKEN_BUCKET, 9 * TOKEN_BUCKET]
    assert bucket_size(32 * 220 - 3, 32, 220) == 32 * 220  # not beyond every row full
