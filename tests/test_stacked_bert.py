"""H runs' BERT classifiers as one stack: each run's logits and gradients are those of the run alone."""
import pytest
import torch
import torch.nn.functional as F

from stacked_bert_fixtures import RUN_LENGTHS, labels as labels_of, stacked_loss, tiny_classifier, token_batch
from XRM.networks.classifiers import TextClassifier
from XRM.networks import per_run_ops, stacked_bert
from XRM.networks.jagged_attention import jagged_attention_runs
from XRM.networks.per_run_ops import grouped_products_run
from XRM.networks.stacked_bert import StackedBert
from XRM.networks.stacked_tokens import GROUP_ALIGNMENT, StackedTokens
from XRM.networks.token_batches import TokenBatch


def _padded_logits(network: TextClassifier, batch: TokenBatch) -> torch.Tensor:
    """Hugging Face's own forward pass on every position of the padded rows."""
    x = batch.tokens.long()
    output = network.encoder(input_ids=x[..., 0], attention_mask=x[..., 1], token_type_ids=x[..., 2])
    return network.head(output.pooler_output)


@pytest.fixture(params=["jagged", "spread"])
def attention(request, monkeypatch) -> str:
    """Each test twice: texts attended packed (jagged attention, where this torch runs it) and spread to
    the token cache's width (the fallback)."""
    if request.param == "spread":
        monkeypatch.setattr(stacked_bert, "jagged_attention_runs", lambda device, dtype: False)
    else:
        assert jagged_attention_runs(torch.device("cpu"), torch.float64)
    return request.param


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_each_stacked_run_has_the_logits_and_gradients_of_the_run_alone(dtype, tolerance, attention):
    """float64: one matrix product per run; float32: torch's grouped matrix product of all runs at once."""
    assert grouped_products_run(torch.device("cpu"), dtype) == (dtype == torch.float32)  # the trial product's answer
    classifiers = [tiny_classifier(seed, dtype=dtype) for seed in range(3)]
    batches = [token_batch(lengths, seed) for seed, lengths in enumerate(RUN_LENGTHS)]
    labels = [labels_of(len(lengths), seed) for seed, lengths in enumerate(RUN_LENGTHS)]
    tokens = StackedTokens.of(batches)
    # each run's real tokens rounded up to a multiple of 16, one run after another; no run padded to another
    assert GROUP_ALIGNMENT == 16 and tokens.groups.counts == [272, 64, 48] and tokens.tokens.shape == (384, 3)
    assert tokens.groups.ends == [272, 336, 384] and tokens.width == 60 and tokens.attention_rows == 7 + 3 + 4 + 3
    stack = StackedBert(classifiers).train(False)
    logits = stack(tokens)
    assert logits.shape == (3, 16, 3) and logits.dtype == dtype  # rows: the largest batch rounded up to 16
    with torch.no_grad():  # one product per run gives the same logits
        per_run = StackedBert(classifiers, grouped_products=False).train(False)(tokens)
    assert (per_run - logits).abs().max() < tolerance
    stacked_loss(logits, labels).backward()
    for run, (classifier, batch, y) in enumerate(zip(classifiers, batches, labels)):
        alone = _padded_logits(classifier.eval(), batch)
        assert alone.abs().min() > 1e-3 and (logits[run, : len(y)] - alone).abs().max() < tolerance
        F.cross_entropy(alone, y).backward()
        for name, parameter in classifier.named_parameters():
            stacked = stack.parameters[name].grad[run]
            assert parameter.grad.abs().max() > 0 and (stacked - parameter.grad).abs().max() < tolerance, name


def test_a_runs_dropout_masks_come_from_its_own_generator_whatever_its_stack(attention):
    classifiers = [tiny_classifier(seed, dropout=0.3) for seed in range(3)]
    batches = [token_batch(lengths, seed) for seed, lengths in enumerate(RUN_LENGTHS)]
    labels = [labels_of(len(lengths), seed) for seed, lengths in enumerate(RUN_LENGTHS)]

    def run_one_in(members: list[int], seed_of_run_one: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
        """Run 1's logits and gradient of its query weights when trained in a stack of ``members``."""
        stack = StackedBert([classifiers[m] for m in members])
        generators = [torch.Generator().manual_seed(seed_of_run_one if m == 1 else 100 + m) for m in members]
        logits = stack(StackedTokens.of([batches[m] for m in members]), generators)
        stacked_loss(logits, [labels[m] for m in members]).backward()
        position = members.index(1)
        gradient = stack.parameters["encoder.encoder.layer.0.attention.self.query.weight"].grad[position]
        return logits[position, :3].detach(), gradient

    default_state = torch.get_rng_state()
    in_three, gradient_in_three = run_one_in([0, 1, 2])
    alone, gradient_alone = run_one_in([1])
    assert torch.equal(torch.get_rng_state(), default_state)  # attention drew from the runs' generators only
    assert torch.equal(in_three, alone)  # the same masks: bitwise the same logits
    # a weight's gradient sums over all the stack's tokens: the same up to the order of the sums
    scale = gradient_alone.abs().max()
    assert scale > 1e-5 and (gradient_in_three - gradient_alone).abs().max() < 1e-12 * scale
    other_draws, _ = run_one_in([1], seed_of_run_one=8)
    without_dropout = StackedBert([classifiers[1]]).train(False)(StackedTokens.of([batches[1]]))[0, :3]
    assert (other_draws - alone).abs().max() > 1e-3 and (without_dropout - alone).abs().max() > 1e-3
    with torch.no_grad():  # no dropout in evaluation: the padded pass's logits
        assert (without_dropout - _padded_logits(classifiers[1].eval(), batches[1])).abs().max() < 1e-10


def test_a_run_leaves_the_stack_in_its_own_modules_layout_and_comes_back():
    classifiers = [tiny_classifier(seed, layers=1) for seed in range(2)]
    stack = StackedBert(classifiers)
    state = stack.run_state(1)
    assert list(state) == [name for name, _ in classifiers[1].named_parameters()]
    fresh = tiny_classifier(5, layers=1)
    fresh.load_state_dict(state)
    assert all(torch.equal(value, classifiers[1].state_dict()[name]) for name, value in fresh.state_dict().items())
    stack.load_run(0, state)  # run 0 now holds run 1's weights: the same logits on the same batch
    logits = stack.train(False)(StackedTokens.of([token_batch([9, 4], 0)] * 2))
    assert torch.equal(logits[0], logits[1])
    with pytest.raises(ValueError, match="no classifier of this stack"):
        stack.load_run(0, {"head.weight": state["head.weight"]})


def test_classifiers_of_other_shapes_or_dropout_are_not_stacked():
    with pytest.raises(ValueError, match="share one architecture"):
        StackedBert([tiny_classifier(0, layers=1), tiny_classifier(1, layers=2)])
    with pytest.raises(ValueError, match="share one architecture and dropout"):
        StackedBert([tiny_classifier(0, dropout=0.1), tiny_classifier(1, dropout=0.2)])


def test_runs_of_different_batch_sizes_carry_only_their_own_fillers():
    tokens = StackedTokens.of([token_batch(lengths, seed) for seed, lengths in enumerate(RUN_LENGTHS)])
    assert tokens.real_tokens == [257, 49, 46] and tokens.fillers == pytest.approx(1 - 352 / 384)
    assert tokens.starts.tolist()[:8] == [0, 5, 45, 105, 107, 140, 197, 0]  # run 0's texts, then unused rows
    assert tokens.starts.tolist()[16:20] == [272, 284, 291, 272]  # run 1's three texts start at token 272
    assert StackedTokens.of([token_batch([8, 8], 0), token_batch([16], 1)]).fillers == 0.0


def test_rows_that_are_not_right_padded_are_not_stacked():
    holed = token_batch([5, 9], 0)
    holed.tokens[1, 3, 1] = 0  # a hole inside row 1: its real tokens are no prefix
    with pytest.raises(ValueError, match="only right-padded rows can be stacked"):
        StackedTokens.of([token_batch([4], 1), TokenBatch.measured(holed.tokens)])


def test_in_autocast_the_linear_weights_are_cast_together_with_the_arithmetic_of_one_cast_each(monkeypatch):
    """bf16 autocast (here on the CPU, as on CUDA): the linear layers' weights and biases reach their products
    cast by one multi-tensor copy a stage of the pass (what lies between two attentions), and their gradients come back the same way, in float32 and in their
    parameters' layout: the logits and gradients of casting each weight where it is used."""
    classifiers = [tiny_classifier(seed, dtype=torch.float32) for seed in range(3)]
    batches = [token_batch(lengths, seed) for seed, lengths in enumerate(RUN_LENGTHS)]
    labels = [labels_of(len(lengths), seed) for seed, lengths in enumerate(RUN_LENGTHS)]
    casts = []
    original = per_run_ops.CastTogether.apply
    monkeypatch.setattr(per_run_ops.CastTogether, "apply", lambda *args: casts.append(len(args) - 1) or original(*args))

    def logits_and_gradients(stack: StackedBert) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = stack.train(False)(StackedTokens.of(batches))
        stacked_loss(logits, labels).backward()
        return logits, {name: parameter.grad for name, parameter in stack.parameters.items()}

    together, gradients = logits_and_gradients(StackedBert(classifiers))
    # each stage's: layer 0's query, key and value (x 2 tensors); the rest of layer 0 (output, intermediate,
    # output) and layer 1's query, key and value; the rest of layer 1, the pooler and the head
    assert casts == [3 * 2, 6 * 2, 3 * 2 + 2 + 2]
    one_by_one = StackedBert(classifiers)
    monkeypatch.setattr(one_by_one, "_cast_weights", lambda dtype, names: {})
    expected, expected_gradients = logits_and_gradients(one_by_one)
    assert casts == [6, 12, 10] and together.dtype == torch.float32 and torch.equal(together, expected)
    for name, gradient in gradients.items():
        assert gradient.dtype == torch.float32 and gradient.is_contiguous() and gradient.abs().max() > 0, name
        assert torch.equal(gradient, expected_gradients[name]), name


def test_in_autocast_a_runs_dropout_masks_are_its_own():
    """bf16 autocast (on the CPU here): run 1, trained with dropout in a stack of three, has bitwise the logits
    of run 1 alone."""
    classifiers = [tiny_classifier(seed, dropout=0.3, dtype=torch.float32) for seed in range(3)]
    batches = [token_batch(lengths, seed) for seed, lengths in enumerate(RUN_LENGTHS)]

    def run_one_in(members: list[int], seed_of_run_one: int = 7) -> torch.Tensor:
        stack = StackedBert([classifiers[m] for m in members])
        generators = [torch.Generator().manual_seed(seed_of_run_one if m == 1 else 100 + m) for m in members]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return stack(StackedTokens.of([batches[m] for m in members]), generators)[members.index(1), :3]

    in_three, alone = run_one_in([0, 1, 2]), run_one_in([1])
    assert alone.dtype == torch.float32 and torch.equal(in_three, alone)
    assert (run_one_in([1], seed_of_run_one=8) - alone).abs().max() > 1e-3  # other draws, other logits
