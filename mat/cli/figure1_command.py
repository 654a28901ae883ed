"""Figure 1 of the paper: memorisation hurts ERM on a spurious correlation, MAT avoids it.
The command line of interpretable_experiment.py, of the console script mat-figure1 and of ``python -m mat figure1``.

A linear model on x = [x_y, x_a, noise] is trained three times (full-batch SGD): ERM
without noise (sigma = 0), ERM with noise of scale --sigma, and MAT with that noise (the
library's XRM twins, then its memorisation-aware shift). Writes to --out_dir:
interpretable.png (the figure), interpretable.gif (training, animated) and metrics.json
(final majority/minority accuracies on train and test of each run). With --sigmas S1 S2 ...
it sweeps the noise scale instead: ERM and MAT at each sigma, sigma_sweep.json and
sigma_sweep.png (minority test accuracy against sigma).
"""
import argparse

from tqdm import tqdm

from mat.figures.interpretable import RUNS, InterpretableConfig
from mat.figures.interpretable import run as train_run
from mat.figures.interpretable import total_epochs
from mat.figures.interpretable_figure import save_figure_png, save_training_gif
from XRM.cli.entry_point import command_line, figure_script_parser, output_folder
from XRM.common.devices import resolve_device
from XRM.common.fileio import atomic_write_json
from XRM.results.figure_files import write_figure_outputs

OUTPUT_STEM = "interpretable"  # interpretable.png, interpretable.gif
SWEEP_STEM = "sigma_sweep"  # sigma_sweep.json, sigma_sweep.png


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options; the defaults are the reference script's settings."""
    defaults = InterpretableConfig()
    parser = figure_script_parser(__doc__, out_dir="./figures/figure1")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the data and of XRM's twin assignment and label flips")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("--sigma", type=float, default=defaults.sigma,
                       help="std of the example-specific noise of the two sigma > 0 runs "
                            "(the reference trains with 0.5; its titles say 1)")
    noise.add_argument("--sigmas", type=float, nargs="+", default=None, metavar="SIGMA",
                       help="instead of the figure, a sweep: ERM and MAT at each of these noise scales (>= 0; "
                            "at 0 every run trains at --lr_sigma0); writes sigma_sweep.png and sigma_sweep.json")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help="full-batch training steps of each ERM/MAT run")
    parser.add_argument("--lr", type=float, default=defaults.lr,
                        help="SGD learning rate of the sigma > 0 runs and of the XRM twins")
    parser.add_argument("--lr_sigma0", type=float, default=defaults.lr_sigma0,
                        help="SGD learning rate of the ERM run with sigma = 0")
    parser.add_argument("--tau", type=float, default=defaults.tau,
                        help="MAT's temperature on the held-out logits")
    parser.add_argument("--xrm_epochs", type=int, default=defaults.xrm_epochs,
                        help="full-batch training steps of the XRM twins before MAT")
    parser.add_argument("--n", type=int, default=defaults.n, help="examples per split (train, test)")
    parser.add_argument("--noise_dim", type=int, default=defaults.noise_dim,
                        help="noise dimensions after x_y and x_a (the paper: 1798, d = 1800)")
    return parser


def config_from_args(args: argparse.Namespace) -> InterpretableConfig:
    """The experiment the options ask for, checked (UserError if it cannot run)."""
    config = InterpretableConfig(
        sigma=args.sigma, epochs=args.epochs, lr=args.lr, lr_sigma0=args.lr_sigma0, tau=args.tau,
        xrm_epochs=args.xrm_epochs, n=args.n, noise_dim=args.noise_dim, seed=args.seed)
    config.check()
    return config


def sweep_main(args: argparse.Namespace) -> int:
    """ERM and MAT at each of --sigmas: write sigma_sweep.json and sigma_sweep.png."""
    from mat.figures.sigma_sweep import check_sigmas, run_sigma_sweep, sweep_epochs

    config = config_from_args(args)
    check_sigmas(args.sigmas)
    device = resolve_device(args.device)
    out_dir = output_folder(args.out_dir)
    with tqdm(total=sweep_epochs(config, args.sigmas), desc="sigma sweep", unit="epoch") as bar:
        sweep = run_sigma_sweep(config, args.sigmas, device, on_step=lambda: bar.update())
    from mat.figures.sigma_sweep_figure import save_sigma_sweep_png  # matplotlib, once the training is done

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep, out_dir / f"{SWEEP_STEM}.json")
    save_sigma_sweep_png(sweep, out_dir / f"{SWEEP_STEM}.png")
    for algorithm, entries in sweep.items():
        print(f"{algorithm} minority test accuracy: " + ", ".join(
            f"sigma {entry['sigma']:g}: {entry['min_te']:.2f}" for entry in entries))
    print(f"wrote {out_dir}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run the three trainings and write the figure, the GIF and metrics.json (or, with --sigmas, the sweep)."""
    if args.sigmas is not None:
        return sweep_main(args)
    config = config_from_args(args)
    device = resolve_device(args.device)
    out_dir = output_folder(args.out_dir)
    runs = {}
    with tqdm(total=total_epochs(config), desc="Figure 1", unit="epoch") as bar:
        for name in RUNS:
            bar.set_description(name)
            runs[name], twins = train_run(name, config, device, on_step=lambda: bar.update())
            if twins is not None:
                bar.write(f"XRM twins: flip rate {twins.flip_rate:.3f}; cross-mistakes find the true "
                          f"minority with precision {twins.precision:.2f}, recall {twins.recall:.2f}")
    write_figure_outputs(out_dir, OUTPUT_STEM, {name: result.metrics() for name, result in runs.items()},
                         lambda path: save_figure_png(runs, path),
                         None if args.no_gif else lambda path: save_training_gif(runs, path))
    for name, result in runs.items():
        metrics = result.metrics()
        print(f"{name:>10} (sigma {metrics['sigma']:g}): majority/minority train "
              f"{metrics['maj_tr']:.2f}/{metrics['min_tr']:.2f}, test {metrics['maj_te']:.2f}/{metrics['min_te']:.2f}")
    print(f"wrote {out_dir}")
    return 0


run = command_line(get_args_parser, main)
