"""What a SLURM partition's nodes offer (from sinfo), and whether a job's request fits one of them.

sbatch accepts a job that asks for more CPUs (or GPUs) than any node of its partition has;
the job then stays PENDING (reason PartitionConfig) for ever. The SLURM launcher compares
its request with the partition's nodes first and refuses with the option to lower.

The check is a necessary condition only: a node that is big enough may still be down, or
lack a --constraint feature; sbatch and the scheduler judge those.
"""
import re
import shutil
import subprocess
from typing import NamedTuple

from XRM.common.errors import UserError
from XRM.launch.status import last_line

# One line per node and partition: partition (sinfo marks the default one with '*'),
# CPUs, memory in MB and generic resources, e.g. "gpu*|2|24105|gpu:a100:2(S:0),gpu:v100:1(S:0)".
# --all: hidden partitions, and those of other groups, are partitions too.
SINFO_COMMAND = ["sinfo", "--noheader", "--all", "--Node", "--format=%P|%c|%m|%G"]
SINFO_TIMEOUT_S = 60
DEFAULT_MARK = "*"

# One GPU entry of a node's Gres: "gpu:4", "gpu:a100:4" or "gpu:a100:4(S:0-1)".
_GPU_GRES = re.compile(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)")


class NodeSize(NamedTuple):
    """What one node offers a job."""

    cpus: int
    mem_mb: int
    gpus: int


class Partitions(NamedTuple):
    """The partitions sinfo knows, each with its nodes, and the default one (None: none is)."""

    nodes: dict[str, list[NodeSize]]
    default: str | None


class Request(NamedTuple):
    """What one job asks a node for; None: nothing asked (the cluster's default)."""

    cpus_per_task: int
    gpus_per_node: int
    mem_gb: int | None


def gpu_count(gres: str) -> int:
    """The GPUs in a node's Gres as sinfo prints it (``(null)``: none), summed over GPU types."""
    return sum(int(count) for count in _GPU_GRES.findall(gres))


def parse_sinfo(text: str) -> Partitions:
    """The partitions in the output of ``SINFO_COMMAND``; a ValueError names a line it cannot read."""
    nodes: dict[str, list[NodeSize]] = {}
    default = None
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        try:
            partition, cpus, mem_mb, gres = fields
            size = NodeSize(int(cpus), int(mem_mb), gpu_count(gres))
        except ValueError:
            raise ValueError(f"unexpected sinfo line {line.strip()!r}") from None
        if partition.endswith(DEFAULT_MARK):
            partition = default = partition.removesuffix(DEFAULT_MARK)
        nodes.setdefault(partition, []).append(size)
    return Partitions(nodes, default)


# The request's fields with their option and unit, and what a node offers of each.
_RESOURCES = [
    ("cpus_per_task", "slurm_cpus_per_task", "CPUs", lambda node: node.cpus),
    ("gpus_per_node", "slurm_gpus_per_node", "GPUs", lambda node: node.gpus),
    ("mem_gb", "slurm_mem_gb", "GB of memory", lambda node: node.mem_mb // 1024),  # SLURM's GB: 1024 MB
]


def check_fits(request: Request, partitions: Partitions, partition: str | None) -> None:
    """Raise a UserError, naming the option to lower, unless some node of ``partition`` (a
    name, a comma-separated list as sbatch takes, or None: the default one) can run the job."""
    if partition is None:
        if partitions.default is None:
            return  # no default partition: sbatch says so itself
        partition = partitions.default
    names = partition.split(",")
    unknown = [name for name in names if name not in partitions.nodes]
    if unknown:
        raise UserError(f"--slurm_partition {partition}: sinfo knows no partition {unknown[0]!r} (or it has no nodes); "
                        f"partitions: {', '.join(partitions.nodes) or 'none'}")
    nodes = [node for name in names for node in partitions.nodes[name]]
    where = f"partition {partition!r}" if len(names) == 1 else f"partitions {partition!r}"
    asked = [(option, getattr(request, field), unit, offered) for field, option, unit, offered in _RESOURCES
             if getattr(request, field)]
    for option, value, unit, offered in asked:
        most = max(offered(node) for node in nodes)
        if value > most:
            raise UserError(f"--{option} {value} is more than any node of {where} has ({most} {unit} at most): "
                            f"lower --{option} to {most} or choose another partition")
    if not any(all(value <= offered(node) for _, value, _, offered in asked) for node in nodes):
        wanted = ", ".join(f"--{option} {value}" for option, value, _, _ in asked)
        raise UserError(f"no node of {where} has {wanted} at once (each alone fits some node): "
                        "lower one of them, or choose another partition")


def read_partitions() -> Partitions | str:
    """The partitions sinfo knows, or a line saying why they could not be read."""
    if shutil.which(SINFO_COMMAND[0]) is None:
        return "sinfo not found"
    try:
        result = subprocess.run(SINFO_COMMAND, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"sinfo gave no answer in {SINFO_TIMEOUT_S} s"
    if result.returncode != 0:
        return f"sinfo failed ({last_line(result.stderr) or f'exit status {result.returncode}'})"
    try:
        return parse_sinfo(result.stdout)
    except ValueError as error:
        return str(error)


def check_request(request: Request, partition: str | None) -> list[str]:
    """Compare the request with the partition's nodes: a UserError if none can run the job;
    otherwise the notes to show (one line when sinfo could not be read, so nothing was checked)."""
    partitions = read_partitions()
    if isinstance(partitions, str):
        return [f"{partitions}: the job's CPUs, GPUs and memory were not compared with the partition's nodes"]
    check_fits(request, partitions, partition)
    return []
