"""How many DataLoader workers a run uses when ``--num_workers`` is ``auto`` (importable without torch).

On a GPU the workers decode images while the training process launches the step's kernels
and its pinning thread copies batches: on an H200 with 16 cores, 12 workers kept ResNet-50
fine-tuning at 87 - 104% of its step alone and 14 or 15 workers at 79 - 91%, because the
launching thread waited for a core (README, Benchmarks). So a GPU run leaves
``CORES_FOR_TRAINING`` of the cores it may use to its own process. Several training
processes on one machine (``--local_gpus``) share its cores first.
"""
import os

#: CPU cores a GPU run keeps for its own process when it chooses its number of workers
CORES_FOR_TRAINING = 4
#: workers a run on the CPU chooses (the cores also train the model there)
CPU_RUN_WORKERS = 4


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity (which taskset and SLURM's task binding set; else
    every core), and no more than a SLURM job step's ``SLURM_CPUS_PER_TASK`` (a cgroup may limit a job
    without binding it)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    allocated = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cores, int(allocated)) if allocated.isdigit() and int(allocated) > 0 else cores


def auto_workers(on_gpu: bool, processes: int = 1) -> int:
    """Workers for ``--num_workers auto``: on a GPU, this process's share of the usable cores (``processes``
    training processes share them) less ``CORES_FOR_TRAINING``, at least 1; on the CPU, ``CPU_RUN_WORKERS``."""
    if not on_gpu:
        return CPU_RUN_WORKERS
    return max(usable_cores() // max(processes, 1) - CORES_FOR_TRAINING, 1)
