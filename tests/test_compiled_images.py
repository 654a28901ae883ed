"""An image classifier's compiled training pass (on CUDA, unless --no_cuda_graphs) is the same network: its
state_dict keys, its evaluation and, on a GPU, its training logits and gradients up to bf16 rounding."""
import pytest
import torch
from torchvision.models import resnet18

from XRM.networks.classifiers import ImageClassifier, use_cuda_graphs


def _classifier(seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    model = ImageClassifier(resnet18(num_classes=10), 3)
    torch.nn.init.normal_(model.backbone.fc.weight, std=0.1)  # a zero head would give zero logits
    return model


def test_compiling_keeps_the_state_dict_and_cpu_passes_eager():
    plain, compiled = _classifier(), _classifier()
    use_cuda_graphs(compiled)
    assert len(compiled.compiled) == 1
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no "_orig_mod" keys in checkpoints
    assert sum(1 for _ in compiled.parameters()) == sum(1 for _ in plain.parameters())
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    compiled.train(), plain.train()
    # on the CPU the eager backbone runs (nothing compiled is called): the same logits bit for bit
    assert torch.equal(compiled(x), plain(x))
    assert compiled(x).shape == (4, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled pass runs on CUDA only")
def test_compiled_training_pass_matches_the_eager_pass_on_cuda():
    torch.backends.cudnn.deterministic = True
    plain, compiled = _classifier().cuda().train(), _classifier().cuda().train()
    use_cuda_graphs(compiled)
    x = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, device="cuda")
    outputs = []
    for model in (plain, compiled):
        logits = model(x)
        logits.square().sum().backward()
        gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
        outputs.append((logits.detach(), gradient, model.backbone.bn1.running_mean.clone()))
    (logits, gradient, statistics), (compiled_logits, compiled_gradient, compiled_statistics) = outputs
    assert logits.abs().max() > 0.1
    assert torch.allclose(compiled_logits, logits, rtol=0.05, atol=0.05)  # both bf16: rounding apart
    assert torch.nn.functional.cosine_similarity(compiled_gradient, gradient, dim=0) > 0.99
    assert torch.allclose(compiled_statistics, statistics, rtol=1e-2, atol=1e-3)  # batch-norm statistics updated
    compiled.eval(), plain.eval()
    with torch.inference_mode():
        assert torch.allclose(compiled(x), plain(x), rtol=0.05, atol=0.05)  # evaluation: eager, the same weights
