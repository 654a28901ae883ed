"""Memorisation scores (Feldman & Zhang, 2020) of every training example, for ERM and MAT side by side.
The command line of memorization_analysis.py, of the console script mat-memorization and of
``python -m mat memorization``.

M models of each algorithm (20 by default) train on random halves of the training set, in
complementary pairs (every example is held in by M/2 models and held out by M/2), together
as one stack. An example's score is the accuracy on it of the models that trained on it
minus that of the models that did not: near 1 for a memorised example. MAT reads the
held-out logits of a phase-1 folder (--phase_1_dir), as main.py's MAT does. Writes to
--out_dir: memorization.json (per group: the scores' mean, median and count, held-in and
held-out accuracy), scores.pt (every example's score, in example order) and
memorization.png (the scores' histogram of each group, a panel per algorithm and group), and prints a table.

    python main.py --phase 1 --datasets Synthetic --out_dir out
    python memorization_analysis.py --dataset Synthetic --phase_1_dir out/XRM --out_dir memo
"""
import argparse

from tqdm import tqdm

from XRM.cli.entry_point import HelpFormatter, command_line, output_folder, parse_hparams
from XRM.common.run_options import INPUT_CHOICES
from XRM.common.seeds import check_seed

ALGORITHMS = ("ERM", "MAT")  # mat.memorization_study.STUDY_ALGORITHMS, named here without importing torch


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", "--datasets", dest="dataset", required=True, metavar="NAME",
                        help="one dataset (main.py's spelling --datasets is taken too): a registered dataset with small "
                             "models (Synthetic, the image datasets' features.pt, ColorMNIST; in any case) or the path "
                             "of a custom features .pt")
    parser.add_argument("--data_path", default="./data", help="folder holding the datasets (see download.py)")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS,
                        help="algorithms to score, side by side")
    parser.add_argument("--phase_1_dir", default=None,
                        help="MAT's phase-1 results: the folder holding <Dataset>/group_labels_no/ (e.g. out/XRM); "
                             "its best-flip-rate seed-0 run is used")
    parser.add_argument("--num_models", type=int, default=20,
                        help="models per algorithm, each on a random half (an even number: complementary pairs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the halves, the models' weights and batches")
    parser.add_argument("--hparams", default="{}", metavar="JSON",
                        help='override the dataset\'s default hyper-parameters, e.g. \'{"num_steps": 2001}\'')
    parser.add_argument("--inputs", default="auto", choices=INPUT_CHOICES,
                        help="image datasets: 'features' trains on features.pt (memorisation needs small models)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--out_dir", default="./memorization", help="where the outputs go")
    return parser


def format_table(summary: dict[str, dict]) -> str:
    """One row per group: its size, then per algorithm the mean and median score and the held-in
    and held-out accuracies."""
    algorithms = list(summary)
    groups = list(summary[algorithms[0]]["per_group"])
    header = f"{'group':<8}{'n':>7}" + "".join(
        f"{name + ' mean':>11}{'median':>8}{'held-in':>9}{'held-out':>9}" for name in algorithms)
    lines = [header]
    for group in groups:
        row = f"{group:<8}{summary[algorithms[0]]['per_group'][group]['n']:>7}"
        for name in algorithms:
            entry = summary[name]
            score = entry["per_group"][group]
            row += (f"{score['mean']:>11.3f}{score['median']:>8.3f}{entry['held_in_acc'][group]:>9.3f}"
                    f"{entry['held_out_acc'][group]:>9.3f}")
        lines.append(row)
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Check every input, train the models, write the outputs and print the table."""
    overrides = parse_hparams(args.hparams)
    check_seed(args.seed, "--seed")
    out_dir = output_folder(args.out_dir)
    from mat.memorization import check_num_models
    from mat.memorization_study import load_study_inputs, run_study, study_scores, study_summary
    from XRM.common.devices import resolve_device
    from XRM.common.fileio import atomic_torch_save, atomic_write_json

    check_num_models(args.num_models)
    device = resolve_device(args.device)
    study = load_study_inputs(args.dataset, args.data_path, list(dict.fromkeys(args.algorithms)), args.phase_1_dir,
                              overrides, args.inputs, device, args.seed)
    total = sum(setup.hparams["num_steps"] for setup in study.setups.values())
    with tqdm(total=total, desc=f"{args.num_models} models per algorithm", unit="step") as bar:
        results = run_study(study, args.num_models, args.seed, on_step=lambda: bar.update())
    summary = study_summary(study, results)
    scores = study_scores(study, results)
    from mat.figures.memorization_figure import save_memorization_png  # matplotlib, once the training is done

    atomic_write_json(summary, out_dir / "memorization.json")
    atomic_torch_save(scores, out_dir / "scores.pt")
    save_memorization_png(scores["scores"], scores["y"], scores["a"], out_dir / "memorization.png")
    n = len(scores["y"])
    print(f"memorisation scores of {n} training examples ({args.dataset}), {args.num_models} models per algorithm "
          f"on random halves; accuracies of the models that held each example in / out:")
    print(format_table(summary))
    print(f"wrote {out_dir}")
    return 0


run = command_line(get_args_parser, main)
