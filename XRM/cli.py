"""What every command-line entry point shares: user errors become one line and exit status 2."""
import argparse
import sys
from typing import Callable

from XRM.errors import UserError

USER_ERROR_EXIT = 2


def run_cli(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], int | None]) -> None:
    """Parse argv with ``parser``, call ``main``, and exit; a UserError prints ``error: ...`` and exits 2."""
    args = parser.parse_args()
    try:
        status = main(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, unfinished ones continue with --resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
