"""Preparing a dataset under --data_path: fetch, verify, extract, metadata, features.

One registry names every dataset download.py knows. ``prepare_dataset`` is idempotent:
a dataset whose folder holds the ``.prepared`` marker is skipped, each archive already
extracted (marker, or its contents placed by hand) is left alone, and features.pt is
computed only when asked for and absent. Every file of a dataset is tried even when an
earlier one fails, so one run reports all that is missing; the files that did arrive
stay for the next run, and so do the folders where the failures' lines say to save a file.
"""
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.common.registry import Registry
from XRM.data import metadata, sources
from XRM.data.chexpert import write_chexpert_metadata
from XRM.data.extract import ArchiveError, is_extracted, safe_extract
from XRM.data.fetch import (ACCEPT_UNOFFICIAL_FLAG, checksum_problem, fetch, manual_copy_hint, source_location,
                            unofficial_warning)
from XRM.data.image_layouts import get_image_layout
from XRM.data.metadata_table import SPLIT_NAMES, MetadataTable, format_group_counts, group_counts, size_warnings
from XRM.data.nicopp import write_nicopp_metadata
from XRM.data.sources import RemoteFile

PREPARED_MARKER = ".prepared"


@dataclass(frozen=True)
class DatasetRecipe:
    """How to prepare one dataset: its files, its metadata builder, its images."""

    name: str  # the name on download.py's command line (and the mirror's folder)
    folder: str  # its folder under --data_path
    files: tuple[RemoteFile, ...]
    build_metadata: Callable[[Path], MetadataTable | None]
    image_dataset: str | None = None  # registered in image_layouts.py: features can be computed
    split_names: dict[int, str] | None = None
    # Examples per split code in the published dataset (where documented): other counts are warned about.
    official_sizes: dict[int, int] | None = None
    aliases: tuple[str, ...] = ()  # other names download.py takes (main.py's name, where it differs in more than case)


#: names are taken in any case (``Waterbirds`` is waterbirds) and by their aliases (main.py's ``ColorMNIST``)
RECIPES: Registry[DatasetRecipe] = Registry("dataset", any_case=True)


class DatasetFailed(UserError):
    """Every problem that kept one dataset from being prepared, one line each in ``lines``
    (each starts with the dataset's name); the message joins them with "; "."""

    def __init__(self, dataset: str, problems: list[str]):
        self.dataset = dataset
        self.lines = [f"{dataset}: {problem}" for problem in problems]
        super().__init__("; ".join(self.lines))


def register_recipe(recipe: DatasetRecipe) -> None:
    """Add a dataset to download.py; a name (or alias) can be registered once."""
    RECIPES.add(recipe.name, recipe, recipe.aliases)


def get_recipe(name: str) -> DatasetRecipe:
    """The recipe of ``name`` (in any case, or an alias); raises UserError listing the valid names."""
    return RECIPES.lookup(name)


def image_recipe(name: str, files: tuple[RemoteFile, ...], build_metadata: Callable[[Path], MetadataTable],
                 split_names: dict[int, str] | None = None,
                 official_sizes: dict[int, int] | None = None, aliases: tuple[str, ...] = ()) -> DatasetRecipe:
    """The recipe of image dataset ``name`` (registered in image_layouts.py), in the folder training reads."""
    return DatasetRecipe(name, get_image_layout(name).folder, files, build_metadata, name, split_names,
                         official_sizes, aliases)


# Split sizes as the datasets' papers (and README.md) give them.
WATERBIRDS_SIZES = {0: 4795, 1: 1199, 2: 5794}
CELEBA_SIZES = {0: 162770, 1: 19867, 2: 19962}
register_recipe(image_recipe("waterbirds", sources.WATERBIRDS_FILES, metadata.write_waterbirds_metadata,
                             official_sizes=WATERBIRDS_SIZES))
register_recipe(image_recipe("celeba", sources.CELEBA_FILES, metadata.write_celeba_metadata,
                             official_sizes=CELEBA_SIZES))
register_recipe(DatasetRecipe("civilcomments", "civilcomments", sources.CIVILCOMMENTS_FILES,
                              metadata.write_civilcomments_metadata))
register_recipe(DatasetRecipe("multinli", "multinli", sources.MULTINLI_FILES, metadata.write_multinli_metadata))
register_recipe(image_recipe("metashift", sources.METASHIFT_FILES, metadata.write_metashift_metadata))
register_recipe(image_recipe("imagenetbg", sources.IMAGENETBG_FILES, metadata.write_imagenetbg_metadata,
                             metadata.IMAGENETBG_SPLIT_NAMES))
# NICO++ under SubpopBench's download name too; CheXpert has no files to fetch: its builder checks those placed
# by hand, and says where to get them.
register_recipe(image_recipe("nicopp", sources.NICOPP_FILES, write_nicopp_metadata, aliases=("nico++",)))
register_recipe(image_recipe("chexpert", (), write_chexpert_metadata))
register_recipe(DatasetRecipe("cmnist", "mnist", sources.MNIST_FILES, metadata.check_mnist, aliases=("ColorMNIST",)))


def _extracted(remote: RemoteFile, folder: Path, stored: Path) -> bool:
    """Whether an archive's contents are already where the metadata builder reads them.

    Extraction renames whole top-level entries into place, so what it provides is never
    half there: a folder holding them (unpacked by hand, beside the archive or not) is
    used as it is.
    """
    if not all((folder / path).exists() for path in remote.provides):
        return False
    if stored.is_file() and not is_extracted(remote.name, folder / remote.extract_to):
        print(f"{', '.join(str(folder / path) for path in remote.provides)} already there: "
              f"using it, {stored} is not unpacked again", file=sys.stderr)
    return True


def _missing(recipe: DatasetRecipe, remote: RemoteFile, stored: Path, mirror: str | None) -> UserError:
    return UserError(f"missing {stored}: run with --download, or "
                     f"{manual_copy_hint(source_location(remote, recipe.name, mirror), stored)}")


def _check_placed(remote: RemoteFile, stored: Path, accept_unofficial: bool) -> None:
    """A file found in place (the user's) whose checksum differs is never deleted: refused,
    or with ``accept_unofficial`` used with a warning."""
    problem = checksum_problem(stored, remote)
    if problem is None:
        return
    if accept_unofficial:
        print(unofficial_warning(str(stored), problem), file=sys.stderr)
        return
    raise UserError(f"{stored} has {problem} (not the official file; left as it is): re-run with "
                    f"{ACCEPT_UNOFFICIAL_FLAG} to use it anyway, or replace it with the official {remote.url}")


def _place_file(recipe: DatasetRecipe, remote: RemoteFile, folder: Path, download: bool, mirror: str | None,
                accept_unofficial: bool) -> None:
    stored = folder / remote.directory / remote.name
    if remote.is_archive and _extracted(remote, folder, stored):
        return
    downloaded = False
    if stored.is_file():
        # Checked every time: a file placed by hand may be a wrong copy.
        _check_placed(remote, stored, accept_unofficial)
    elif not download:
        raise _missing(recipe, remote, stored, mirror)
    else:
        fetch(remote, recipe.name, stored, mirror, accept_unofficial)
        downloaded = True
    if not remote.is_archive:
        return
    try:
        safe_extract(stored, folder / remote.extract_to)
    except ArchiveError as error:
        if not downloaded:
            raise UserError(f"{stored} {error.problem}: replace it with a good copy of {remote.url}") from error
        # A bad download must not stay behind to be mistaken for a good one.
        stored.unlink(missing_ok=True)
        location = source_location(remote, recipe.name, mirror)
        if error.unsafe:  # downloading it again would bring the same archive
            raise UserError(f"{remote.name} from {location} {error.problem}: refused it and deleted it, "
                            f"nothing was extracted; save a trusted copy as {stored}, and re-run without "
                            "--download to prepare it") from error
        raise UserError(f"{remote.name} from {location} {error.problem} (deleted): re-run, or "
                        f"{manual_copy_hint(location, stored)}") from error
    if downloaded:  # the reference deletes archives too; one placed by hand is the user's
        stored.unlink()


def _check_images(recipe: DatasetRecipe, folder: Path, table: MetadataTable) -> None:
    """Every image the metadata lists must be there (one stat each), or the metadata goes."""
    layout = get_image_layout(recipe.image_dataset)
    root = folder / layout.image_root
    missing = [name for name in table.filenames if not (root / name).is_file()]
    if missing:
        (folder / layout.metadata).unlink(missing_ok=True)  # no metadata that looks prepared
        raise UserError(f"{len(missing)} of the {len(table)} images the metadata lists are "
                        f"missing, e.g. {root / missing[0]}: put them there, or delete {folder} and run: "
                        f"{command('download')} --download --data_path {folder.parent} {recipe.name}")


def _remove_empty_folders(folder: Path, remove_top: bool, keep: list[Path]) -> None:
    """Remove the empty folders under ``folder`` (and it, with ``remove_top``), except those of ``keep``."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink() and path not in keep and not any(path.iterdir()):
            path.rmdir()
    if remove_top and folder not in keep and not any(folder.iterdir()):
        folder.rmdir()


def _print_summary(recipe: DatasetRecipe, table: MetadataTable) -> None:
    print(f"{recipe.name}: {len(table)} rows; examples per split and (y, a) group:\n"
          f"{format_group_counts(table, recipe.split_names or SPLIT_NAMES)}", file=sys.stderr)
    if recipe.official_sizes is not None:
        names = recipe.split_names or SPLIT_NAMES
        sizes = {names[split]: sum(groups.values()) for split, groups in group_counts(table).items()}
        official = {names[split]: count for split, count in recipe.official_sizes.items()}
        for line in size_warnings(recipe.name, sizes, official):
            print(line, file=sys.stderr)


def prepare_dataset(name: str, data_path: str | Path, download: bool = False, mirror: str | None = None,
                    accept_unofficial: bool = False) -> Path:
    """Bring dataset ``name`` under ``data_path`` to the prepared state: files fetched
    (when ``download``) or found, archives extracted, metadata written, marker set.
    With ``accept_unofficial``, files whose checksums differ from the published ones are
    used with a warning instead of refused.

    Returns the dataset's folder. Raises DatasetFailed (a UserError) listing, one line
    each, every file that could not be placed (all are tried), or the metadata's problem;
    a dataset that fails never gets its marker or metadata, and the folders its lines say
    to save files into by hand exist (empty, where nothing arrived).
    """
    recipe = get_recipe(name)
    name = recipe.name  # the name it is filed and reported under, however it was spelled
    folder = Path(data_path) / recipe.folder
    if (folder / PREPARED_MARKER).is_file():
        print(f"{name}: already prepared in {folder} (delete {PREPARED_MARKER} there to redo it)", file=sys.stderr)
        return folder
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    save_into: list[Path] = []  # where the failures' lines say to save a file by hand: these folders stay
    try:
        problems = []
        for remote in recipe.files:
            try:
                _place_file(recipe, remote, folder, download, mirror, accept_unofficial)
            except UserError as error:
                problems.append(str(error))
                save_into.append(folder / remote.directory)
        if problems:
            for path in save_into:
                path.mkdir(parents=True, exist_ok=True)
            raise DatasetFailed(name, problems)
        print(f"{name}: writing metadata in {folder}", file=sys.stderr)
        try:
            table = recipe.build_metadata(folder)
            if recipe.image_dataset is not None:
                _check_images(recipe, folder, table)
        except UserError as error:
            raise DatasetFailed(name, [str(error)]) from error
    except BaseException:
        _remove_empty_folders(folder, remove_top=created, keep=save_into)  # none but those a line names
        raise
    if table is not None:
        _print_summary(recipe, table)
    (folder / PREPARED_MARKER).write_text("ok\n")
    return folder
