"""Phase 1 (XRM group inference) and phase 2 (MAT and baselines): arguments -> runs -> launcher.

    python main.py --phase 1 --datasets Synthetic --num_hparams_combs 4 --out_dir out
    python main.py --phase 2 --datasets Synthetic --algorithms MAT ERM --group_labels no \
        --num_hparams_combs 4 --out_dir out
"""
import argparse
import dataclasses
import math

# Only light modules here: the arguments are parsed before torch is imported.
from XRM.cli import output_folder, parse_hparams, run_cli
from XRM.errors import UserError
from XRM.launch import LaunchOptions, format_report, launch, visible_gpu_count
from XRM.options import DEFAULT_CHECKPOINT_SECONDS, DEFAULT_IMAGE_BACKBONE, DTYPES, INPUT_CHOICES, TEXT_MODEL_VARIABLE
from XRM.records import SELECTION_METRICS


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of the reference code's main.py, plus a few conveniences."""
    parser = argparse.ArgumentParser(description="Run phase 1 (XRM) or phase 2 (MAT and baselines).")
    parser.add_argument("--phase", type=int, choices=[1, 2], required=True,
                        help="1: infer groups with XRM; 2: train a classifier (MAT, ERM, GroupDRO, ...)")
    parser.add_argument("--datasets", nargs="+", default=["Waterbirds"], metavar="NAME",
                        help="datasets to run: Waterbirds, CelebA, MultiNLI, CivilComments, ColorMNIST, MetaShift, "
                             "ImagenetBG, Synthetic (an unknown name lists them all), or the path of a custom dataset "
                             "(a features .pt, or a .csv with id,filename,split,y,a or id,text,split,y,a)")
    parser.add_argument("--algorithms", nargs="+", default=None, metavar="NAME",
                        help="algorithms (default: XRM for phase 1, GroupDRO for phase 2): XRM in phase 1; ERM, "
                             "GroupDRO, IRM, RWG, SUBG, MAT, JTT, uLA, LfF, DFR, AFRBase, AFR in phase 2 (an unknown name lists them all)")
    parser.add_argument("--group_labels", default=None,
                        help="training group labels: 'yes' (true), 'no' (none), a phase-1 .pt file, or a phase-1 "
                             "folder whose best run (by flip_rate) is used (default: 'no' in phase 1, 'yes' in phase 2)")
    parser.add_argument("--data_path", default="./data", help="folder holding the datasets (see download.py)")
    parser.add_argument("--out_dir", default="./out", help="results go to <out_dir>/<ALGO>/<Dataset>/group_labels_<src>/")
    parser.add_argument("--phase_1_dir", default=None,
                        help="phase-1 results used by MAT: the folder holding <Dataset>/group_labels_no/ "
                             "(default: <out_dir>/XRM)")
    parser.add_argument("--pair_phase_1_seeds", action="store_true",
                        help="MAT's held-out logits (and a phase-1 folder's groups) for seed s come from phase-1 "
                             "seed s's best run; default: seed 0's best run for every seed, as the reference")
    combs = parser.add_mutually_exclusive_group()
    combs.add_argument("--hparams_comb", type=int, help="run this one hyper-parameter combination (default 0)")
    combs.add_argument("--num_hparams_combs", type=int, help="run combinations 0 .. N-1 of the random search")
    combs.add_argument("--best_hparams_comb_selection_metric", choices=SELECTION_METRICS,
                       help="run the combination that is best by this metric among the seed-0 runs already done")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="run this seed (default 0)")
    seeds.add_argument("--num_seeds", type=int, help="run seeds 0 .. N-1")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs from their last checkpoint")
    parser.add_argument("--quick_run", action="store_true",
                        help="debugging: default hyper-parameters and at most 201 steps")
    parser.add_argument("--adam", action="store_true", help="train with Adam instead of the dataset's optimiser")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--inputs", default="auto", choices=INPUT_CHOICES,
                        help="image datasets: train on precomputed 'features' or fine-tune on 'images'; 'auto' as the "
                             "reference: features in phase 1 (when features.pt exists), images in phase 2, "
                             "Waterbirds features in both")
    parser.add_argument("--image_backbone", default=DEFAULT_IMAGE_BACKBONE, metavar="NAME",
                        help="torchvision model fine-tuned on images (default resnet50; resnet18 for quick checks)")
    parser.add_argument("--text_model", default=None, metavar="NAME_OR_DIR",
                        help=f"text model and tokenizer: a Hugging Face name or a local folder (default: "
                             f"${TEXT_MODEL_VARIABLE}, else bert-base-uncased)")
    parser.add_argument("--backbone_weights", default="pretrained", choices=["pretrained", "none"],
                        help="'none' starts the backbone from random weights (debugging, benchmarks; no download)")
    parser.add_argument("--num_workers", type=int, default=4,
                        help="DataLoader worker processes reading images from disk")
    parser.add_argument("--hparams", default="{}", metavar="JSON",
                        help='override hyper-parameters, e.g. \'{"num_steps": 301, "lr": 0.001}\'')
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="precision of the small models' training (float64: exact comparisons, on the CPU)")
    parser.add_argument("--no_cuda_graphs", dest="cuda_graphs", action="store_false",
                        help="on a GPU, launch every kernel of a stack's step (default: replay the step as a CUDA graph)")
    parser.add_argument("--checkpoint_seconds", type=float, default=DEFAULT_CHECKPOINT_SECONDS, metavar="S",
                        help="save each run's checkpoint at the first evaluation S seconds after the last one "
                             "(0: at every evaluation); a resumed run loses at most S seconds of training")
    add_launch_arguments(parser)
    return parser


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how the runs execute: here, on this machine's GPUs, or as SLURM job arrays."""
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
    group.add_argument("--status", action="store_true",
                       help="show each run of the sweep as done / running / pending / failed / not launched")


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
    """A UserError for counts that cannot describe a sweep."""
    for name in ("num_hparams_combs", "num_seeds", "stack_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} {value}: give a number >= 1")
    for name in ("hparams_comb", "seed"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UserError(f"--{name} {value}: give a number >= 0")
    if not (math.isfinite(args.checkpoint_seconds) and args.checkpoint_seconds >= 0):
        raise UserError(f"--checkpoint_seconds {args.checkpoint_seconds}: give a number of seconds >= 0")


def spec_from_args(args: argparse.Namespace):
    """The sweep (a SweepSpec) described by the parsed arguments, with phase-dependent defaults filled in."""
    from XRM.sweep import SweepSpec

    overrides = parse_hparams(args.hparams)
    default_algorithms = ["XRM"] if args.phase == 1 else ["GroupDRO"]
    default_group_labels = "no" if args.phase == 1 else "yes"
    # every other SweepSpec field is the argument of the same name
    same_name = {f.name: getattr(args, f.name) for f in dataclasses.fields(SweepSpec) if hasattr(args, f.name)}
    return SweepSpec(**{
        **same_name,
        "algorithms": args.algorithms or default_algorithms,
        "group_labels": args.group_labels or default_group_labels,
        "hparams_overrides": overrides,
    })


def main(args: argparse.Namespace) -> int:
    """Build the runs and their stacks, check their inputs, then launch those not finished yet (or show their status)."""
    check_counts(args)
    output_folder(args.out_dir)
    launcher, options = launch_options(args)
    from XRM.devices import resolve_device
    from XRM.sweep import make_runs, plan_stacks
    from XRM.sweep_status import format_status, sweep_status
    from XRM.run_inputs import check_finished, check_runs
    from XRM.train import train_stack

    runs = make_runs(spec_from_args(args))
    if args.status:
        unfinished = plan_stacks([run for run in runs if not run.is_done()], args.stack_size)
        stack_of = {run.run_name: number for number, stack in enumerate(unfinished) for run in stack}
        print(format_status(sweep_status(runs, options.slurm_dir), stack_of))
        return 0
    resolve_device(args.device)
    check_finished([run for run in runs if run.is_done()])
    check_runs([run for run in runs if not run.is_done()])
    report = launch(plan_stacks(runs, args.stack_size), train_stack, launcher, options)
    print(format_report(report))
    return 1 if report.failures else 0


if __name__ == "__main__":
    run_cli(get_args_parser(), main)
