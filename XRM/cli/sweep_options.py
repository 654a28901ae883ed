"""Command-line pieces every sweep command shares (main.py, reproduce.py): the options of the
runs' training, where they execute, and the launch itself. Importable without torch, so that
the commands parse their arguments (and answer --help) before torch is loaded.
"""
import argparse
import math

from XRM.cli.entry_point import parse_hparams
from XRM.common.errors import UserError
from XRM.common.run_options import add_option_arguments
from XRM.common.seeds import check_seed
from XRM.launch.launchers import LaunchOptions, LaunchReport, launch, visible_gpu_count
from XRM.runs.tensorboard_logs import require_tensorboard

DATASETS_HELP = ("Waterbirds, CelebA, MultiNLI, CivilComments, ColorMNIST, MetaShift, ImagenetBG, NICOpp, CheXpert, "
                 "Synthetic (in any case, or download.py's names such as cmnist; an unknown name lists them all), or "
                 "the path of a "
                 "custom dataset (a features .pt, or a .csv with id,filename,split,y,a or id,text,split,y,a)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every run of a sweep shares (XRM.common.run_options.TrainingOptions: data,
    device, precision, inputs, backbones, checkpoints), the results folder and hyper-parameter overrides."""
    parser.add_argument("--out_dir", default="./out", help="results go to <out_dir>/<ALGO>/<Dataset>/group_labels_<src>/")
    add_option_arguments(parser)
    parser.add_argument("--hparams", default="{}", metavar="JSON",
                        help='override hyper-parameters, e.g. \'{"num_steps": 301, "lr": 0.001}\'')


#: main.py's --status
SWEEP_STATUS_HELP = "show each run of the sweep as done / running / pending / failed / stopped / not launched"


def add_launch_arguments(parser: argparse.ArgumentParser, status_help: str = SWEEP_STATUS_HELP) -> None:
    """Where and how the runs execute: here, on this machine's GPUs, or as SLURM job arrays; and the
    --status option (``status_help``: what it shows)."""
    group = parser.add_argument_group("launching")
    defaults = LaunchOptions()
    group.add_argument("--slurm_partition", default=None, help="submit the runs as SLURM job arrays to this partition")
    group.add_argument("--slurm_dir", default=defaults.slurm_dir, help="job logs and the run -> job index")
    group.add_argument("--slurm_time", type=int, default=defaults.slurm_time, help="minutes per job")
    group.add_argument("--slurm_gpus_per_node", type=int, default=defaults.slurm_gpus_per_node, help="GPUs per job (0: none)")
    group.add_argument("--slurm_cpus_per_task", type=int, default=defaults.slurm_cpus_per_task, help="CPU cores per job")
    group.add_argument("--slurm_mem_gb", type=int, default=None, help="memory per job (default: the cluster's)")
    group.add_argument("--constraint", default=None, help="SLURM --constraint, e.g. a GPU type")
    group.add_argument("--slurm_account", default=None, help="SLURM account")
    group.add_argument("--slurm_qos", default=None, help="SLURM quality of service")
    group.add_argument("--array_parallelism", type=int, default=defaults.array_parallelism,
                       help="at most this many jobs of an array at once")
    group.add_argument("--wait", action="store_true", help="wait for the SLURM jobs, then list the failed runs")
    group.add_argument("--local_gpus", default=None, metavar="N|auto",
                       help="run on this machine, one stack per GPU at a time (auto: every visible GPU)")
    group.add_argument("--stack_size", type=int, default=None, metavar="N",
                       help="at most N runs trained together as one stack (1: one run at a time); default: all "
                            "that share their data, split where the device's memory would not hold them")
    group.add_argument("--dry_run", action="store_true",
                       help="list the runs that would be launched and the stacks they form; run nothing")
    group.add_argument("--status", action="store_true", help=status_help)


def launch_options(args: argparse.Namespace) -> tuple[str, LaunchOptions]:
    """The launcher named by the arguments and its options."""
    local_gpus = None
    if args.local_gpus is not None:
        if args.local_gpus != "auto" and not args.local_gpus.isdigit():
            raise UserError(f"--local_gpus takes a number or 'auto', not {args.local_gpus!r}")
        local_gpus = visible_gpu_count() if args.local_gpus == "auto" else int(args.local_gpus)
    if args.slurm_partition and args.local_gpus is not None:
        raise UserError("choose one of --slurm_partition and --local_gpus")
    options = LaunchOptions(
        slurm_partition=args.slurm_partition, slurm_dir=args.slurm_dir, slurm_time=args.slurm_time,
        slurm_gpus_per_node=args.slurm_gpus_per_node, slurm_cpus_per_task=args.slurm_cpus_per_task,
        slurm_mem_gb=args.slurm_mem_gb, constraint=args.constraint, slurm_account=args.slurm_account,
        slurm_qos=args.slurm_qos, array_parallelism=args.array_parallelism, wait=args.wait, local_gpus=local_gpus,
    )
    if args.dry_run:
        return "dry_run", options
    if args.slurm_partition:
        return "slurm", options
    return ("local_gpus" if args.local_gpus is not None else "local"), options


def check_counts(args: argparse.Namespace) -> None:
    """A UserError for counts that cannot describe a sweep (the options a command lacks are skipped), and for
    --tensorboard without its package; ``--num_workers`` becomes its count, or None for ``auto`` (chosen
    where each run executes)."""
    workers = args.num_workers
    if workers != "auto" and not (isinstance(workers, int) or workers.isdigit()):
        raise UserError(f"--num_workers {workers}: give auto or a number of workers >= 0")
    args.num_workers = None if workers == "auto" else int(workers)
    for name in ("num_hparams_combs", "num_seeds", "stack_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name} {value}: give a number >= 1")
    if getattr(args, "hparams_comb", None) is not None and args.hparams_comb < 0:
        raise UserError(f"--hparams_comb {args.hparams_comb}: give a number >= 0")
    if getattr(args, "seed", None) is not None:
        check_seed(args.seed, "--seed")
    if not (math.isfinite(args.checkpoint_seconds) and args.checkpoint_seconds >= 0):
        raise UserError(f"--checkpoint_seconds {args.checkpoint_seconds}: give a number of seconds >= 0")
    if args.tensorboard:
        require_tensorboard()


def hparams_overrides(args: argparse.Namespace) -> dict:
    """The --hparams JSON object; a UserError when it is not one."""
    return parse_hparams(args.hparams)


def check_and_launch(runs: list, stack_size: int | None, launcher: str, options: LaunchOptions) -> LaunchReport:
    """Check every input of ``runs`` (finished ones: their settings; the others: their data, groups,
    phase-1 files and checkpoints) before anything is written, then launch those not finished."""
    from XRM.runs.inputs import check_finished, check_runs
    from XRM.runs.sweep import plan_stacks
    from XRM.runs.train import train_stack

    check_finished([run for run in runs if run.is_done()])
    check_runs([run for run in runs if not run.is_done()])
    return launch(plan_stacks(runs, stack_size), train_stack, launcher, options)
