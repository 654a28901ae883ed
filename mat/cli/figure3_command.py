"""Figure 3 of the paper: good, bad and ugly memorisation on a toy regression.
The command line of good_bad_ugly_memorization.py, of the console script mat-figure3 and of ``python -m mat figure3``.

Trains three regressors until they memorise the same noisy points, each seeing its own
scale sigma of example-specific input noise, and writes to --out_dir:
good_bad_ugly.png (the figure), good_bad_ugly.gif (training, animated) and metrics.json.
"""
import argparse

from tqdm import tqdm

from mat.figures.toy_regression import DEFAULT_SIGMAS, ExperimentConfig, run_case
from mat.figures.toy_regression_figure import save_fit_png, save_training_gif
from XRM.cli.entry_point import command_line, figure_script_parser, output_folder
from XRM.common.devices import resolve_device
from XRM.results.figure_files import write_figure_outputs

OUTPUT_STEM = "good_bad_ugly"  # good_bad_ugly.png, good_bad_ugly.gif


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options; the defaults are the paper's set-up."""
    defaults = ExperimentConfig()
    parser = figure_script_parser(__doc__, out_dir="./figures/figure3")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the data (label noise, eps) and of the network's init")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help="maximum number of full-batch training steps per case")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    parser.add_argument("--loss_threshold", type=float, default=defaults.loss_threshold,
                        help="stop a case once its training MSE is below this (0: never)")
    parser.add_argument("--check_every", type=int, default=defaults.check_every,
                        help="steps between loss checks and GIF snapshots")
    parser.add_argument("--sigmas", type=float, nargs=len(DEFAULT_SIGMAS),
                        metavar=tuple(name.upper() for name in DEFAULT_SIGMAS),
                        default=list(DEFAULT_SIGMAS.values()),
                        help="std of the example-specific eps for the "
                             + " / ".join(DEFAULT_SIGMAS) + " cases")
    parser.add_argument("--noise_std", type=float, default=defaults.noise_std,
                        help="std of the label noise on the training points")
    parser.add_argument("--n_train", type=int, default=defaults.n_train,
                        help="number of evenly spaced training points")
    parser.add_argument("--eps_dim", type=int, default=defaults.eps_dim,
                        help="dimension of the example-specific eps input")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment the options ask for, checked (UserError if it cannot run)."""
    config = ExperimentConfig(
        sigmas=dict(zip(DEFAULT_SIGMAS, args.sigmas)), n_train=args.n_train,
        eps_dim=args.eps_dim, noise_std=args.noise_std, lr=args.lr, epochs=args.epochs,
        loss_threshold=args.loss_threshold, check_every=args.check_every, seed=args.seed,
    )
    config.check()
    return config


def main(args: argparse.Namespace) -> int:
    """Run the three cases and write the figure, the GIF and metrics.json; 2 on bad input."""
    config = config_from_args(args)
    device = resolve_device(args.device)
    out_dir = output_folder(args.out_dir)
    cases = {}
    for name, sigma in config.sigmas.items():
        with tqdm(total=config.epochs, desc=f"{name} (sigma={sigma:g})", unit="epoch") as bar:
            def advance(epoch: int, loss: float) -> None:
                bar.update(epoch - bar.n)
                bar.set_postfix(loss=f"{loss:.1e}", refresh=False)
            cases[name] = run_case(config, sigma, device, on_check=advance)
    write_figure_outputs(out_dir, OUTPUT_STEM, {name: case.metrics.as_dict() for name, case in cases.items()},
                         lambda path: save_fit_png(cases, path),
                         None if args.no_gif else lambda path: save_training_gif(cases, path))
    for name, case in cases.items():
        metrics = case.metrics
        print(f"{name:>5}: sigma {metrics.sigma:g}, {metrics.epochs} epochs, "
              f"train loss {metrics.train_loss:.1e}, mse {metrics.mse:.2e}")
    print(f"wrote {out_dir}")
    return 0


run = command_line(get_args_parser, main)
