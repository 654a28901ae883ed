"""Training throughput of phase 1 (XRM) and phase 2 (ERM, MAT) on a features dataset.

python benchmarks/train_throughput.py --device cuda --train 162770 --dim 2048 --steps 2001
Writes a random CelebA-sized features.pt under a temporary folder, then times whole runs
(train_stack([spec]): training, evaluation every --eval_every steps, checkpoints) and prints steps/s.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
import mat  # noqa: E402,F401  (registers MAT)
from XRM.algorithms import get_algorithm_class  # noqa: E402
from XRM.common.devices import resolve_device  # noqa: E402
from XRM.results.records import run_directory  # noqa: E402
from XRM.runs.spec import RunSpec  # noqa: E402
from XRM.runs.sweep import select_phase_1_file  # noqa: E402
from XRM.runs.train import train_stack  # noqa: E402


def write_random_features(data_path: Path, n_train: int, dim: int) -> None:
    """A CelebA-layout features.pt with ``n_train`` training rows and a tenth of that for va and te."""
    generator = torch.Generator().manual_seed(0)
    content = {}
    for split, n in (("tr", n_train), ("va", max(n_train // 10, 100)), ("te", max(n_train // 10, 100))):
        y = torch.randint(0, 2, (n, 1), generator=generator)
        m = torch.randint(0, 2, (n, 1), generator=generator)
        x = torch.randn(n, dim, generator=generator)
        x[:, :1] += 1.0 * y + 2.0 * m  # a weak label signal and a spurious one: the twins disagree on some
        content[split] = {"x": x, "y": y, "m": m}
    (data_path / "celeba").mkdir(parents=True)
    torch.save(content, data_path / "celeba" / "features.pt")


def time_run(spec: RunSpec, device: torch.device) -> float:
    """Wall seconds of one run."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_stack([spec])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    """Time XRM, ERM and MAT runs and print steps per second."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train", type=int, default=20000, help="training examples")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--steps", type=int, default=1001)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    device = resolve_device(args.device)
    overrides = {"num_steps": args.steps, "eval_every": args.eval_every, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_random_features(root / "data", args.train, args.dim)
        print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
              f"{args.train} x {args.dim} features, {args.steps} steps, eval every {args.eval_every}, batch {args.batch_size}")
        for algorithm in ("XRM", "ERM", "MAT"):
            cls, group_labels = get_algorithm_class(algorithm), "no"
            phase_1_file = None
            if cls.needs_held_out_logits:  # MAT: the XRM run above wrote it
                phase_1_file = str(select_phase_1_file(root / "out" / "XRM", "CelebA", 0))
            spec = RunSpec(phase=cls.phase, dataset="CelebA", algorithm=algorithm, hparams_comb=0, seed=0,
                           out_dir=str(run_directory(root / "out", algorithm, "CelebA", group_labels)),
                           data_path=str(root / "data"), group_labels=group_labels, phase_1_file=phase_1_file,
                           device=str(device), hparams_overrides=overrides)
            seconds = time_run(spec, device)
            print(f"{algorithm:>4}: {seconds:6.2f} s per run, {args.steps / seconds:7.0f} steps/s (evaluation included)")


if __name__ == "__main__":
    main()
