"""Throughput of one training step (forward, backward, optimiser step) of ResNet-50 and BERT.

python benchmarks/backbone_step.py --device cuda
python benchmarks/backbone_step.py --device cpu --tiny --steps 3   (a quick check that it runs)
python benchmarks/backbone_step.py --models resnet50 --image_batch 128 --image_step graphs --no_cudnn_benchmark

Random weights (same cost as pretrained ones, nothing downloaded) and random inputs already
on the device, so this measures the model step alone: ERM with the dataset family's
optimiser (SGD for images, AdamW for text), bf16 autocast and channels_last on CUDA, as
main.py trains. Prints steps/s and images/s or tokens/s.

``--image_step`` picks how the ResNet's step runs: ``eager`` (float images, every kernel launched),
``graphs`` (uint8 pixels normalised on the device, the passes replayed from CUDA graphs, as main.py
trains on a GPU), ``compiled`` (the backbone through torch.compile) or ``compiled-graphs`` (the passes
compiled, then replayed from CUDA graphs: main.py's --compile_backbone).
cuDNN picks its kernels by timing them (benchmark mode) unless ``--no_cudnn_benchmark`` (main.py's
default choice).
"""
import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from XRM.algorithms import Batch  # noqa: E402
from XRM.algorithms.group_robust import ERM  # noqa: E402
from XRM.engine.model_stacks import ModuleStack  # noqa: E402
from XRM.networks.backbones import BackboneSpec, build_torchvision_backbone  # noqa: E402
from XRM.networks.classifiers import ImageClassifier, TextClassifier  # noqa: E402

#: how --image_step runs a ResNet's training step
IMAGE_STEPS = ("eager", "graphs", "compiled", "compiled-graphs")


def image_model(tiny: bool) -> torch.nn.Module:
    """ResNet-50 (resnet18 when tiny), randomly initialised, two classes."""
    return ImageClassifier(build_torchvision_backbone(BackboneSpec("resnet18" if tiny else "resnet50", False)), 2)


def image_step(how: str, tiny: bool, batch: int, size: int,
               device: torch.device) -> tuple[ImageClassifier, torch.Tensor]:
    """A ResNet classifier on ``device`` set up to train ``how`` (one of IMAGE_STEPS), and a batch for it: float
    images for ``eager``, uint8 pixels (normalised on the device, as training's batches) for the others."""
    model = image_model(tiny).to(device)
    if how == "eager":
        return model, torch.randn(batch, 3, size, size, device=device)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    if how == "compiled":
        model.backbone = torch.compile(model.backbone)
    if how.endswith("graphs"):  # captured now (compiled first as --compile_backbone does); nothing on a CPU
        model.use_cuda_graphs(tuple(x.shape), compiled=how == "compiled-graphs")
    return model, x


def text_model(tiny: bool) -> torch.nn.Module:
    """bert-base-uncased's architecture (a 1-layer, 32-wide BERT when tiny), randomly initialised."""
    from transformers import BertConfig, BertModel

    config = (BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
              if tiny else BertConfig())  # BertConfig()'s defaults are bert-base-uncased's sizes
    return TextClassifier(BertModel(config), 2)


def time_steps(model: torch.nn.Module, x: torch.Tensor, optimizer: str, lr: float, steps: int, warmup: int,
               device: torch.device) -> float:
    """Seconds per training step, averaged over ``steps`` after ``warmup`` steps."""
    stack = ModuleStack(model, {"optimizer": optimizer, "lr": lr, "weight_decay": 1e-4, "num_steps": warmup + steps},
                        device, num_workers=0)
    y = torch.randint(0, 2, (1, len(x)), device=device)
    batch = Batch(index=torch.arange(len(x), device=device)[None], y=y, groups=torch.zeros_like(y),
                  mask=torch.ones(y.shape, device=device), uniforms=None, step=0)
    algorithm = ERM(num_classes=2)

    def step() -> None:
        losses, _ = algorithm.loss(stack.forward(x), batch, {}, {})  # the classifiers' forward pass in bf16 on CUDA
        stack.step(losses.sum())

    return timed(step, steps, warmup, device)


def timed(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``step``, averaged over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    """Time the chosen backbones and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cpu, cuda:1")
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert"], choices=["resnet50", "bert"],
                        help="backbones to time")
    parser.add_argument("--image_batch", type=int, default=64, help="images per step (the reference draws 32-128)")
    parser.add_argument("--image_size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--text_batch", type=int, default=32, help="texts per step (the reference draws 16-64)")
    parser.add_argument("--seq_len", type=int, default=220, help="tokens per text (CivilComments 220, MultiNLI 128)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotuning, allocator)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and sizes: checks the script on a CPU")
    parser.add_argument("--image_step", default="eager", choices=IMAGE_STEPS, help="the ResNet's step: see above")
    parser.add_argument("--no_cudnn_benchmark", action="store_true",
                        help="cuDNN's default kernels, as main.py trains (default: the fastest, timed at the first steps)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}) "
          f"torch={torch.__version__}")
    if "resnet50" in args.models:
        start = time.perf_counter()
        model, x = image_step(args.image_step, args.tiny, args.image_batch, args.image_size, device)
        set_up = time.perf_counter() - start  # with graphs: the capture, compiling first where compiled
        seconds = time_steps(model, x, "sgd", 1e-4, args.steps, args.warmup, device)
        print(f"{'resnet18' if args.tiny else 'resnet50'} batch={args.image_batch} size={args.image_size} "
              f"step={args.image_step} cudnn.benchmark={torch.backends.cudnn.benchmark}: "
              f"{1 / seconds:.2f} steps/s, {args.image_batch / seconds:.0f} images/s (set-up {set_up:.1f} s)")
    if "bert" in args.models:
        ids = torch.randint(1000, 30000, (args.text_batch, args.seq_len), device=device)  # within the vocabulary
        x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=2).to(torch.int32)
        seconds = time_steps(text_model(args.tiny), x, "adamw", 1e-5, args.steps, args.warmup, device)
        print(f"{'tiny-bert' if args.tiny else 'bert-base'} batch={args.text_batch} seq_len={args.seq_len}: "
              f"{1 / seconds:.2f} steps/s, {args.text_batch * args.seq_len / seconds:.0f} tokens/s")


if __name__ == "__main__":
    main()
