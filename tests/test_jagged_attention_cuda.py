"""Jagged attention on a GPU: flash attention's variable-length kernel, called directly, attends each text
alone, and its backward pass applies the dropout masks its forward pass drew. Needs a GPU: skipped
elsewhere; run on the GPU machine."""
import pytest
import torch
import torch.nn.functional as F

from XRM.networks.jagged_attention import Segments, flash_kernel_runs, jagged_attention, jagged_attention_runs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

LENGTHS, HEADS, HEAD_SIZE = [5, 40, 1, 17, 64], 4, 64
CUDA = torch.device("cuda")


def _rows(seed: int) -> torch.Tensor:
    generator = torch.Generator(device=CUDA).manual_seed(seed)
    return torch.randn(sum(LENGTHS), HEADS, HEAD_SIZE, device=CUDA, generator=generator).to(torch.bfloat16)


def _segments() -> Segments:
    return Segments.of(torch.tensor(LENGTHS, device=CUDA), LENGTHS)


def test_the_kernel_runs_in_bf16_on_this_gpu_and_a_stack_attends_packed_only_through_it():
    assert flash_kernel_runs(CUDA, torch.bfloat16) and jagged_attention_runs(CUDA, torch.bfloat16)
    assert not flash_kernel_runs(CUDA, torch.float32)  # 16-bit dtypes only
    assert not jagged_attention_runs(CUDA, torch.float32)  # nested tensors instead would be slow: spread rows
    assert not flash_kernel_runs(torch.device("cpu"), torch.bfloat16)


def test_each_texts_outputs_and_gradients_are_its_dense_attentions():
    query, key, value = (_rows(seed).requires_grad_(True) for seed in range(3))
    weights = _rows(3).float()
    context = jagged_attention(query, key, value, _segments())
    (context.float() * weights).sum().backward()
    expected, grads = [], {name: [] for name in "qkv"}
    for q, k, v, w in zip(*(rows.detach().split(LENGTHS) for rows in (query, key, value)), weights.split(LENGTHS)):
        q, k, v = (part.float().requires_grad_(True) for part in (q, k, v))
        dense = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
        expected.append(dense.transpose(0, 1))
        (expected[-1] * w).sum().backward()
        for name, part in zip("qkv", (q, k, v)):
            grads[name].append(part.grad)
    assert context.shape == (sum(LENGTHS), HEADS, HEAD_SIZE)
    assert (context.float() - torch.cat(expected)).abs().max() < 3e-2
    for name, leaf in zip("qkv", (query, key, value)):
        expected_grad = torch.cat(grads[name])
        scale = expected_grad.abs().max()
        assert scale > 0.1 and (leaf.grad.float() - expected_grad).abs().max() < 0.03 * scale


def test_dropout_follows_the_default_generator_and_the_backward_pass_keeps_the_forward_masks():
    query, key = _rows(0), _rows(1)
    weights = _rows(3).float()
    results = []
    for seed in (7, 7, 8):
        value = _rows(2).requires_grad_(True)
        torch.cuda.manual_seed(seed)
        context = jagged_attention(query, key, value, _segments(), dropout_p=0.5)
        torch.rand(1000, device=CUDA)  # draws between the passes change nothing
        loss = (context.float() * weights).sum()
        loss.backward()
        # the context is linear in the values (context = A value, A the dropped-out probabilities), so
        # loss = <A^T weights, value> = <value's gradient, value> exactly when both passes share A
        assert loss.abs() > 1 and abs(loss - (value.grad.float() * value.float()).sum()) < 2e-2 * loss.abs()
        results.append(context.detach())
    assert torch.equal(results[0], results[1])
    assert (results[0].float() - results[2].float()).abs().max() > 0.1  # another seed, other masks
