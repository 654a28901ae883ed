"""A ResNet's training pass replayed from CUDA graphs computes what the eager pass computes: logits,
gradients, batch-norm statistics, over several steps of SGD; also compiled first, and where the compiler
fails (one warning, the uncompiled pass). Needs a GPU: skipped elsewhere; run on the
GPU machine."""
import copy

import pytest
import torch

from XRM.networks.classifiers import ImageClassifier, use_cuda_graphs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
SHAPE = (16, 3, 64, 64)


def _classifier() -> ImageClassifier:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    network = ImageClassifier(resnet18(num_classes=4), 3).cuda()
    torch.nn.init.normal_(network.backbone.fc.weight, std=0.1)  # a zero head would give the backbone no gradient
    return network


def _steps(network: ImageClassifier, batches: list[torch.Tensor], labels: list[torch.Tensor]) -> list:
    """Logits, gradients and batch-norm statistics after each of a few SGD steps."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    seen = []
    for x, y in zip(batches, labels):
        logits = network(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads = torch.cat([p.grad.flatten() for p in network.parameters()])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        statistics = torch.cat([b.flatten().float() for b in network.buffers()])
        seen.append((logits.detach().clone(), grads.clone(), statistics))
    return seen


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _compiler_fails(*args, **kwargs):
    raise RuntimeError("no compiler on this machine\nsecond line")


@pytest.mark.parametrize("compiled", ["no", "yes", "fails"])
def test_replayed_steps_match_eager_steps(compiled, monkeypatch, capsys):
    eager = _classifier()
    graphed = copy.deepcopy(eager)
    before = [b.clone() for b in graphed.buffers()]
    if compiled == "fails":  # a machine where torch.compile cannot build its kernels
        monkeypatch.setattr(torch, "compile", _compiler_fails)
    use_cuda_graphs(graphed, SHAPE, compile_images=compiled != "no")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert graphed.graphs.compiled == (compiled == "yes")
    assert len(warnings) == (compiled == "fails")  # one line says the pass runs uncompiled
    if warnings:
        assert "RuntimeError: no compiler on this machine)" in warnings[0] and "--compile_backbone" in warnings[0]
    assert graphed.graphs.captures == 1
    assert all(torch.equal(a, b) for a, b in zip(before, graphed.buffers()))  # the capture's passes left no trace
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, SHAPE, dtype=torch.uint8, generator=generator).cuda() for _ in range(4)]
    labels = [torch.randint(0, 3, SHAPE[:1], generator=generator).cuda() for _ in range(4)]
    for step, (a, b) in enumerate(zip(_steps(eager, batches, labels), _steps(graphed, batches, labels))):
        for name, x, y in zip(("logits", "gradients", "batch-norm statistics"), a, b):
            assert y.abs().max() > 0, (step, name)
            assert _relative(y, x) < 2e-2, (step, name, _relative(y, x))  # bf16 passes: the same function
    assert graphed.graphs.captures == 1  # every step replayed the one capture


def test_other_shapes_and_evaluation_run_eagerly():
    network = _classifier()
    use_cuda_graphs(network, SHAPE)
    other = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, device="cuda")
    network(other).sum().backward()  # not the captured shape: eager, no new capture
    with torch.inference_mode():
        network.eval()
        logits = network(torch.randint(0, 256, SHAPE, dtype=torch.uint8, device="cuda"))
    assert logits.shape == (6, 3) and network.graphs.captures == 1
