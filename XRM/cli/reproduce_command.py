"""The paper's Table 1 protocol in one command: phase 1 (XRM, or EIIL with --group_inference EIIL),
each algorithm's phase-2 sweep, the selected combinations for every seed in both model-selection
settings, then the tables and plots.
The command line of reproduce.py, of the console script xrm-reproduce and of ``python -m XRM.cli reproduce``:

    python reproduce.py --datasets Waterbirds CelebA --algorithms MAT GroupDRO ERM --data_path ./data \\
        --out_dir ./table1

Run it again after a crash, a preemption or Ctrl-C: finished runs are kept, unfinished ones resume.
"""
import argparse
from collections.abc import Sequence

# Only light modules here: the arguments are parsed before torch is imported.
from XRM.cli.entry_point import command_line, output_folder
from XRM.cli.plugins import load_plugins
from XRM.cli.sweep_options import (DATASETS_HELP, add_launch_arguments, add_training_arguments, check_counts,
                                   hparams_overrides, launch_options)
from XRM.common.run_options import command_line_options


def get_args_parser() -> argparse.ArgumentParser:
    """reproduce.py's options: what to reproduce, then main.py's training and launching options."""
    parser = argparse.ArgumentParser(description="Run the paper's Table 1 protocol and write its tables and plots.")
    parser.add_argument("--datasets", nargs="+", default=["Waterbirds"], metavar="NAME",
                        help=f"datasets: {DATASETS_HELP}")
    parser.add_argument("--algorithms", nargs="+", default=["MAT", "GroupDRO", "ERM"], metavar="NAME",
                        help="phase-2 algorithms (an unknown name lists them all); each gets the groups it trains "
                             "with from what it declares: none, or XRM's inferred groups (see --true_groups)")
    parser.add_argument("--num_hparams_combs", type=int, default=10,
                        help="random hyper-parameter combinations of phase 1 and of each phase-2 sweep")
    parser.add_argument("--num_seeds", type=int, default=10, help="seeds of each selected combination")
    parser.add_argument("--true_groups", action="store_true",
                        help="algorithms that train with training groups get the true ones where validation groups "
                             "are known (default: XRM's inferred groups in both settings)")
    parser.add_argument("--group_inference", default="XRM", metavar="NAME",
                        help="the phase-1 algorithm whose inferred groups build the 'no group labels' setting and "
                             "train the algorithms that need training groups: XRM (the paper's protocol) or EIIL; "
                             "EIIL writes no held-out logits, so MAT is refused with it")
    add_training_arguments(parser)
    add_launch_arguments(parser, status_help="show where the protocol stands: each stage's runs as done / running / "
                                             "pending / failed / stopped / not launched (a line for each running, "
                                             "pending, failed or stopped one), and whether a reproduce command is "
                                             "running on --out_dir")
    parser.set_defaults(out_dir="./table1")
    return parser


def protocol_from_args(args: argparse.Namespace):
    """The Protocol the arguments describe (each dataset and algorithm once)."""
    from XRM.cli.protocol import Protocol

    run_options = {option.name: getattr(args, option.name) for option in command_line_options()}
    return Protocol(list(dict.fromkeys(args.datasets)), list(dict.fromkeys(args.algorithms)), args.num_hparams_combs,
                    args.num_seeds, args.out_dir, args.true_groups,
                    {**run_options, "hparams_overrides": hparams_overrides(args)}, args.group_inference)


def main(args: argparse.Namespace, plugins: Sequence[str] = ()) -> int:
    """Check every input, then run (or, with --dry_run, list) the protocol's stages; ``plugins``:
    modules to import first (XRM.cli.plugins; ``mat`` registers MAT)."""
    check_counts(args)
    output_folder(args.out_dir)
    launcher, options = launch_options(args)
    load_plugins(plugins)
    from XRM.cli.reproduction import dry_run, run_protocol, status
    from XRM.common.devices import resolve_device
    from XRM.runs.inputs import check_runs

    protocol = protocol_from_args(args)
    protocol.check_group_inference()  # a phase-2 --group_inference, a folder of the other inference: one line
    protocol.sources()  # unknown algorithms and group-label kinds an algorithm refuses: one line, before stage 1
    phase_1 = protocol.phase_1_runs()  # unknown datasets
    if args.status:
        print(status(protocol, options.slurm_dir))
        return 0
    if launcher == "dry_run":
        dry_run(protocol)
        return 0
    resolve_device(args.device)
    check_runs([run for run in phase_1 if not run.is_done()])  # missing or broken data files, bad hyper-parameters
    return run_protocol(protocol, args.stack_size, launcher, options)


run = command_line(get_args_parser, main,
                   interrupted="interrupted; run the same command again to continue where it stopped")
