"""Phase 1 (XRM group inference) and phase 2 (MAT and baselines): arguments -> runs -> launcher.
The command line of main.py, of the console script xrm-train and of ``python -m XRM.cli train``:

    python main.py --phase 1 --datasets Synthetic --num_hparams_combs 4 --out_dir out
    python main.py --phase 2 --datasets Synthetic --algorithms MAT ERM --group_labels no \
        --num_hparams_combs 4 --out_dir out
"""
import argparse
import dataclasses
from collections.abc import Sequence

# Only light modules here: the arguments are parsed before torch is imported.
from XRM.cli.entry_point import command_line, output_folder
from XRM.cli.plugins import load_plugins
from XRM.cli.sweep_options import (DATASETS_HELP, add_launch_arguments, add_training_arguments, check_and_launch,
                                   check_counts, hparams_overrides, launch_options)
from XRM.launch.launchers import format_report
from XRM.results.records import SELECTION_METRICS


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of the reference code's main.py, plus a few conveniences."""
    parser = argparse.ArgumentParser(description="Run phase 1 (XRM) or phase 2 (MAT and baselines).")
    parser.add_argument("--phase", type=int, choices=[1, 2], required=True,
                        help="1: infer groups (XRM, or EIIL); 2: train a classifier (MAT, ERM, GroupDRO, ...)")
    parser.add_argument("--datasets", nargs="+", default=["Waterbirds"], metavar="NAME",
                        help=f"datasets to run: {DATASETS_HELP}")
    parser.add_argument("--algorithms", nargs="+", default=None, metavar="NAME",
                        help="algorithms (default: XRM for phase 1, GroupDRO for phase 2): XRM or EIIL in phase 1; ERM, "
                             "GroupDRO, IRM, RWG, SUBG, MAT, JTT, uLA, LfF, DFR, AFRBase, AFR in phase 2 (an unknown name lists them all)")
    parser.add_argument("--group_labels", default=None,
                        help="training group labels: 'yes' (true), 'no' (none), a phase-1 .pt file, or a phase-1 "
                             "folder whose best run (by flip_rate, EIIL's by eiil_penalty) is used (default: 'no' in phase 1, 'yes' in phase 2)")
    parser.add_argument("--phase_1_dir", default=None,
                        help="phase-1 results used by MAT: the folder holding <Dataset>/group_labels_no/ "
                             "(default: <out_dir>/XRM; an EIIL folder has no held-out logits for MAT)")
    parser.add_argument("--pair_phase_1_seeds", action="store_true",
                        help="MAT's held-out logits (and a phase-1 folder's groups) for seed s come from phase-1 "
                             "seed s's best run; default: seed 0's best run for every seed, as the reference")
    combs = parser.add_mutually_exclusive_group()
    combs.add_argument("--hparams_comb", type=int, help="run this one hyper-parameter combination (default 0)")
    combs.add_argument("--num_hparams_combs", type=int, help="run combinations 0 .. N-1 of the random search")
    combs.add_argument("--best_hparams_comb_selection_metric", "--selection_criterion",
                       dest="best_hparams_comb_selection_metric", choices=SELECTION_METRICS,
                       help="run the combination that is best by this metric among the seed-0 runs already done "
                            "(read_results' spelling --selection_criterion is taken too)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="run this seed (default 0)")
    seeds.add_argument("--num_seeds", type=int, help="run seeds 0 .. N-1")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs from their last checkpoint")
    add_training_arguments(parser)
    add_launch_arguments(parser)
    return parser


def spec_from_args(args: argparse.Namespace):
    """The sweep (a SweepSpec) described by the parsed arguments, with phase-dependent defaults filled in."""
    from XRM.runs.sweep import SweepSpec

    default_algorithms = ["XRM"] if args.phase == 1 else ["GroupDRO"]
    default_group_labels = "no" if args.phase == 1 else "yes"
    # every other SweepSpec field is the argument of the same name
    same_name = {f.name: getattr(args, f.name) for f in dataclasses.fields(SweepSpec) if hasattr(args, f.name)}
    return SweepSpec(**{
        **same_name,
        "algorithms": args.algorithms or default_algorithms,
        "group_labels": args.group_labels or default_group_labels,
        "hparams_overrides": hparams_overrides(args),
    })


def main(args: argparse.Namespace, plugins: Sequence[str] = ()) -> int:
    """Build the runs and their stacks, check their inputs, then launch those not finished yet (or show
    their status); ``plugins``: modules to import first (XRM.cli.plugins; ``mat`` registers MAT)."""
    check_counts(args)
    output_folder(args.out_dir)
    launcher, options = launch_options(args)
    load_plugins(plugins)
    from XRM.common.devices import resolve_device
    from XRM.launch.status import format_status, sweep_status
    from XRM.runs.sweep import make_runs, plan_stacks

    runs = make_runs(spec_from_args(args))
    if args.status:
        unfinished = plan_stacks([run for run in runs if not run.is_done()], args.stack_size)
        stack_of = {run.run_name: number for number, stack in enumerate(unfinished) for run in stack}
        print(format_status(sweep_status(runs, options.slurm_dir), stack_of))
        return 0
    resolve_device(args.device)
    report = check_and_launch(runs, args.stack_size, launcher, options)
    print(format_report(report))
    return 1 if report.failures else 0


run = command_line(get_args_parser, main)
