"""Inputs read through a DataLoader (images from disk, a module stack) train like the same inputs held as a
tensor (a parameter stack)."""
import json

import pytest
import torch
from conftest import training_losses, without_training_loss
from torch.utils.data import Dataset

from XRM.data.base import GroupDataset, SplitTensors
from XRM.data.registry import register_dataset
from XRM.results.records import RunFiles
from XRM.runs.spec import RunSpec
from XRM.runs.train import train_stack


def _splits() -> dict[str, SplitTensors]:
    generator = torch.Generator().manual_seed(3)
    out = {}
    for split, n in (("tr", 64), ("va", 32), ("te", 32)):
        y = torch.randint(0, 2, (n,), generator=generator)
        x = torch.randn(n, 2, 3, generator=generator) + y[:, None, None]  # 2-D inputs, like tiny images
        out[split] = SplitTensors(x, y, torch.randint(0, 2, (n,), generator=generator))
    return out


class _ListInputs(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.rows = [row.clone() for row in x]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.rows[index]


@register_dataset("TestTensorInputs")
class _TensorInputs(GroupDataset):
    family, num_steps, eval_every = "mlp", 31, 10

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        return _splits()


@register_dataset("TestDatasetInputs")
class _DatasetInputs(_TensorInputs):
    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        return {k: SplitTensors(_ListInputs(s.x), s.y, s.a) for k, s in _splits().items()}


def _records(tmp_path, dataset: str, workers: int) -> list[dict]:
    out = tmp_path / f"{dataset}{workers}"
    train_stack([RunSpec(phase=2, dataset=dataset, algorithm="RWG", group_labels="yes", hparams_comb=0, seed=0,
                         data_path=".", out_dir=str(out), device="cpu", num_workers=workers, quick_run=True)])
    lines = RunFiles(out, 0, 0).results.read_text().splitlines()[1:]
    return [json.loads(line) for line in lines]


def test_loader_inputs_match_tensor_inputs(tmp_path):
    reference = _records(tmp_path, "TestTensorInputs", 0)
    assert [r["step"] for r in reference] == [0, 10, 20, 30]
    for workers in (0, 1):  # a worker process changes nothing
        loaded = _records(tmp_path, "TestDatasetInputs", workers)
        assert without_training_loss(loaded) == without_training_loss(reference)
        assert training_losses(loaded) == pytest.approx(training_losses(reference), rel=1e-6)


def test_auto_workers_leave_a_gpu_run_four_of_its_cores(monkeypatch):
    import os

    from XRM.common.worker_counts import auto_workers
    from XRM.engine.batches import worker_count

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [worker_count(None, cuda), worker_count(None, cpu), worker_count(3, cuda), worker_count(0, cpu)] == \
        [12, 4, 3, 0]
    assert [auto_workers(True, processes) for processes in (1, 2, 4, 8)] == [12, 4, 1, 1]  # --local_gpus shares
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "10")  # a SLURM job limited to 10 of the node's 16 cores
    assert worker_count(None, cuda) == 6
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # bound to 2 cores
    assert worker_count(None, cuda) == 1
