"""Stacked BERT runs on a GPU: bf16 grouped products give each run's logits, and a run's dropout draws
come from its own generator. Needs a GPU: skipped elsewhere; run on the GPU machine."""
import pytest
import torch

from stacked_bert_fixtures import RUN_LENGTHS, tiny_classifier, token_batch
from XRM.networks.stacked_bert import StackedBert
from XRM.networks.stacked_tokens import StackedTokens
from XRM.networks.token_batches import TokenBatch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _cuda_batches() -> list[TokenBatch]:
    return [TokenBatch.measured(token_batch(lengths, seed).tokens.cuda()) for seed, lengths in enumerate(RUN_LENGTHS)]


@torch.no_grad()
def test_bf16_stacked_logits_are_each_runs_alone():
    classifiers = [tiny_classifier(seed, dtype=torch.float32).cuda().eval() for seed in range(3)]
    batches = _cuda_batches()
    tokens = StackedTokens.of(batches)
    logits = {}
    for grouped in (True, False):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits[grouped] = StackedBert(classifiers, grouped_products=grouped).train(False)(tokens)
    assert (logits[True] - logits[False]).abs().max() < 2e-2
    for run, (classifier, batch) in enumerate(zip(classifiers, batches)):
        alone = classifier(batch)  # bf16 autocast on CUDA, float32 logits
        assert alone.abs().max() > 0.1 and (logits[True][run, : len(batch.lengths)] - alone).abs().max() < 5e-2


@torch.no_grad()
def test_a_runs_dropout_on_the_gpu_comes_from_its_own_generator():
    classifiers = [tiny_classifier(seed, dropout=0.3, dtype=torch.float32).cuda() for seed in range(3)]
    batches = _cuda_batches()
    default_state = torch.cuda.get_rng_state()

    def run_one_in(members: list[int], seed: int = 7) -> torch.Tensor:
        generators = [torch.Generator("cuda").manual_seed(seed if m == 1 else 100 + m) for m in members]
        logits = StackedBert([classifiers[m] for m in members])(StackedTokens.of([batches[m] for m in members]),
                                                                 generators)
        return logits[members.index(1), :3]

    in_three, alone, other = run_one_in([0, 1, 2]), run_one_in([1]), run_one_in([1], seed=8)
    assert (in_three - alone).abs().max() < 1e-5 and (other - alone).abs().max() > 1e-3
    assert torch.equal(torch.cuda.get_rng_state(), default_state)  # the default generator drew nothing
