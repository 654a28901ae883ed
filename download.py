"""Download, verify and prepare the datasets: `python download.py --download --data_path ./data waterbirds`."""
import argparse
import sys

# Only light modules here: the arguments are parsed (and --help answered) before torch loads.
from XRM.data.prepare import RECIPES, get_recipe, prepare_dataset
from XRM.cli import run_cli


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of download.py."""
    parser = argparse.ArgumentParser(
        description="Fetch, verify and extract datasets, then write their metadata CSVs (and features). "
                    "Without --download, prepares files already placed under --data_path.")
    parser.add_argument("datasets", nargs="+", metavar="DATASET",
                        help=f"datasets to prepare: {' '.join(RECIPES)}")
    parser.add_argument("--data_path", required=True, help="folder that holds every dataset's folder")
    parser.add_argument("--download", action="store_true", help="download the files that are not in place")
    parser.add_argument("--mirror", default=None, metavar="URL_OR_DIR",
                        help="fetch <mirror>/<dataset>/<original file name> instead of the original location")
    parser.add_argument("--features", action="store_true",
                        help="also write ResNet-50 (ImageNet) features.pt for the image datasets")
    parser.add_argument("--batch_size", type=int, default=128, help="images per batch when computing features")
    parser.add_argument("--num_workers", type=int, default=4, help="DataLoader workers when computing features")
    return parser


def main(args: argparse.Namespace) -> int:
    """Prepare each dataset in turn (a UserError stops at the first problem)."""
    from XRM.data.extract_features import write_features
    from XRM.data.feature_file import FEATURES_FILE

    recipes = [get_recipe(name) for name in args.datasets]  # reject typos before any work
    for recipe in recipes:
        folder = prepare_dataset(recipe.name, args.data_path, args.download, args.mirror)
        if args.features and recipe.image_dataset is not None:
            if (folder / FEATURES_FILE).is_file():
                print(f"{recipe.name}: {folder / FEATURES_FILE} exists (delete it to recompute)", file=sys.stderr)
            else:
                path = write_features(args.data_path, recipe.image_dataset,
                                      batch_size=args.batch_size, num_workers=args.num_workers)
                print(f"{recipe.name}: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(get_args_parser(), main)
