"""What every command-line entry point shares: user errors become one line and exit status 2."""
import argparse
import importlib
import json
import os
import shutil
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from XRM import __version__
from XRM.common.errors import UserError
from XRM.common.fileio import MIN_FREE_BYTES

USER_ERROR_EXIT = 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Help for a script whose description is its docstring: keeps its line breaks, shows every default."""


def figure_script_parser(description: str, out_dir: str) -> argparse.ArgumentParser:
    """A figure script's parser with the options all of them share: --out_dir (default
    ``out_dir``), --device and --no_gif; the script adds what its experiment varies."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument("--out_dir", default=out_dir, help="where the outputs go")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--no_gif", action="store_true", help="skip the training animation")
    return parser


def parse_hparams(text: str) -> dict:
    """The --hparams option's JSON object (hyper-parameter overrides); a UserError unless it is one."""
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError:
        overrides = None
    if not isinstance(overrides, dict):
        raise UserError(f"--hparams must be a JSON object, e.g. '{{\"lr\": 0.001}}'; got {text!r}")
    return overrides


def output_folder(path: str, option: str = "--out_dir") -> Path:
    """``path`` (given as ``option``) as a folder to write into (it may not exist yet); a UserError
    if it is a file, lies below a file, or cannot be written."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {folder} is a file: pass a directory")
    existing = next(parent for parent in (folder, *folder.absolute().parents) if parent.exists())
    if not existing.is_dir():
        raise UserError(f"{option} {folder}: {existing} is a file, so the folder cannot be made; pass another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {folder}: {existing} is not writable; pass a folder you can write to")
    if shutil.disk_usage(existing).free < MIN_FREE_BYTES:
        raise UserError(f"{option} {folder}: no space left on {existing}; free some space or pass another folder")
    return folder


Main = Callable[[argparse.Namespace], int | None]


def call_main(main: Main, args: argparse.Namespace) -> int:
    """Call a script's ``main`` and return its exit status; a UserError prints ``error: ...`` and gives 2."""
    try:
        return main(args) or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT


#: what run_cli says after Ctrl-C (or SIGTERM during training) unless the script says otherwise
TRAINING_INTERRUPTED = "interrupted; finished runs are kept, unfinished ones continue with --resume"


def run_cli(parser: argparse.ArgumentParser, main: Main, interrupted: str = TRAINING_INTERRUPTED,
            argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default: the command line) with ``parser`` and the --version option every
    command has, call ``main`` through :func:`call_main`, and exit with its status (after Ctrl-C:
    the line ``interrupted`` and 128 + the signal's number)."""
    add_version_option(parser)
    args = parser.parse_args(argv)
    try:
        status = call_main(main, args)
    except KeyboardInterrupt as stop:  # Ctrl-C, or training's Interrupted (SIGINT or SIGTERM) after its checkpoints
        print(interrupted, file=sys.stderr)
        status = 128 + getattr(stop, "signum", signal.SIGINT)
    sys.exit(status)


def command_line(get_parser: Callable[[], argparse.ArgumentParser], main: Callable[..., int | None],
                 interrupted: str = TRAINING_INTERRUPTED) -> Callable[..., None]:
    """A command's ``run(argv=None, **options)``, which its console script calls without arguments: parse
    ``argv`` (default: the process's arguments) with ``get_parser()``, call ``main(args, **options)``
    (train and reproduce take ``plugins``) and exit, as :func:`run_cli` does."""
    def run(argv: Sequence[str] | None = None, **options) -> None:
        run_cli(get_parser(), partial(main, **options), interrupted, argv)

    run.__doc__ = f"The command line of {main.__module__}: parse, run, exit (XRM.cli.entry_point.command_line)."
    return run


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """--version: print the command's name and the toolkit's version (XRM.__version__), then exit 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the toolkit's version and exit")


def run_subcommand(program: str, commands: dict[str, str], argv: Sequence[str] | None = None) -> None:
    """``python -m <program> <command> [options]``: run ``commands[command]``, a module whose ``run(argv)``
    is that command's line (its options, --help and --version are the command's own)."""
    parser = argparse.ArgumentParser(prog=f"python -m {program}",
                                     description=f"The commands of {program}; '<command> --help' lists each one's options.")
    parser.add_argument("command", choices=list(commands), help="the command to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the command's options")
    add_version_option(parser)
    args = parser.parse_args(argv)
    sys.argv[0] = f"{parser.prog} {args.command}"  # the command's usage lines name it as it was called
    importlib.import_module(commands[args.command]).run(args.options)
