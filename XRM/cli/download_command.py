"""Download, verify and prepare the datasets: `python download.py --download --data_path ./data waterbirds`.
The command line of download.py, of the console script xrm-download and of ``python -m XRM.cli download``."""
import argparse
import sys
from pathlib import Path

from XRM.cli.entry_point import USER_ERROR_EXIT, command_line
from XRM.common.errors import UserError
# Only light modules here: the arguments are parsed (and --help answered) before torch loads.
from XRM.data.fetch import ACCEPT_UNOFFICIAL_FLAG
from XRM.data.prepare import RECIPES, DatasetFailed, DatasetRecipe, get_recipe, prepare_dataset


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of download.py."""
    parser = argparse.ArgumentParser(
        description="Fetch, verify and extract datasets, then write their metadata CSVs (and features). "
                    "Without --download, prepares files already placed under --data_path.")
    parser.add_argument("datasets", nargs="+", metavar="DATASET",
                        help=f"datasets to prepare: {' '.join(RECIPES)}, in any case (main.py's names: Waterbirds, "
                             "CelebA, ...; ColorMNIST is cmnist)")
    parser.add_argument("--data_path", required=True, help="folder that holds every dataset's folder")
    parser.add_argument("--download", action="store_true", help="download the files that are not in place")
    parser.add_argument("--mirror", default=None, metavar="URL_OR_DIR",
                        help="fetch <mirror>/<dataset>/<original file name> instead of the original location")
    parser.add_argument(ACCEPT_UNOFFICIAL_FLAG, action="store_true",
                        help="use files whose checksums differ from the published ones (copies placed by hand "
                             "or served by --mirror), with a warning, instead of refusing them")
    parser.add_argument("--features", action="store_true",
                        help="also write ResNet-50 (ImageNet) features.pt for the image datasets")
    parser.add_argument("--batch_size", type=int, default=128, help="images per batch when computing features")
    parser.add_argument("--num_workers", type=int, default=4, help="DataLoader workers when computing features")
    return parser


def _write_features(recipe: DatasetRecipe, folder: Path, args: argparse.Namespace) -> None:
    from XRM.data.extract_features import write_features
    from XRM.data.feature_file import FEATURES_FILE

    if (folder / FEATURES_FILE).is_file():
        print(f"{recipe.name}: {folder / FEATURES_FILE} exists (delete it to recompute)", file=sys.stderr)
        return
    path = write_features(args.data_path, recipe.image_dataset, batch_size=args.batch_size,
                          num_workers=args.num_workers)
    print(f"{recipe.name}: wrote {path}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    """Prepare every dataset given; one that fails does not stop the others. The failures
    are listed at the end, one ``error:`` line each, and the exit status is then 2; the
    datasets that succeeded stay prepared."""
    recipes = [get_recipe(name) for name in dict.fromkeys(args.datasets)]  # reject typos before any work
    failures: dict[str, list[str]] = {}
    for recipe in recipes:
        try:
            folder = prepare_dataset(recipe.name, args.data_path, args.download, args.mirror,
                                     args.accept_unofficial)
            if args.features and recipe.image_dataset is not None:
                _write_features(recipe, folder, args)
        except DatasetFailed as error:
            failures[recipe.name] = error.lines
        except UserError as error:  # the features of a prepared dataset
            failures[recipe.name] = [f"{recipe.name}: {error}"]
    if not failures:
        return 0
    if len(recipes) > 1:
        prepared = [recipe.name for recipe in recipes if recipe.name not in failures]
        print(f"{len(failures)} of {len(recipes)} datasets failed"
              + (f" ({', '.join(prepared)} prepared)" if prepared else "") + ":", file=sys.stderr)
    for lines in failures.values():
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
    return USER_ERROR_EXIT


run = command_line(get_args_parser, main, interrupted="interrupted; prepared datasets are kept, run the same command "
                   "again for the others (files already downloaded are not fetched again)")
