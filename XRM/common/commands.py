"""The toolkit's commands as the user runs them, for messages that tell what to run next.

Each command has three spellings: a checkout's script (``python main.py``), an installed console
script (``xrm-train``) and ``python -m XRM.cli train``. A message names a command in the spelling of
the command running now (read from ``sys.argv[0]`` when the message is made), so that a user of
``xrm-train`` is told to run ``xrm-download``, and a user of ``python main.py`` ``python download.py``.
"""
import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: how ``python -m`` runs the toolkit's commands (XRM/cli/__main__.py)
MODULE = "XRM.cli"
#: the beginnings of the package's console scripts (pyproject.toml): the toolkit's and the paper's
CONSOLE_SCRIPT_PREFIXES = ("xrm-", "mat-")


@dataclass(frozen=True)
class Command:
    """One command: its script in a checkout (relative to the checkout's root) and its console script."""

    script: str
    console_script: str


#: by the name ``python -m XRM.cli`` takes
COMMANDS = {
    "train": Command("main.py", "xrm-train"),
    "results": Command("XRM/read_results.py", "xrm-results"),
    "reproduce": Command("reproduce.py", "xrm-reproduce"),
    "download": Command("download.py", "xrm-download"),
}


def command(name: str, program: str | None = None) -> str:
    """How to run command ``name`` (a key of COMMANDS), spelled as ``program`` (default: the running
    one, ``sys.argv[0]``) was run: ``python <script>`` when it is a script of a checkout that holds the
    command's script (main.py beside download.py, XRM/read_results.py one folder down), the console
    script when it is one of the package's (``xrm-*``, ``mat-*``), else ``python -m XRM.cli <name>``
    (which works wherever the package can be imported: a notebook, a job, a test)."""
    path = Path(sys.argv[0] if program is None else program)
    wanted = COMMANDS[name]
    if path.suffix == ".py":
        for root in (path.parent, path.parent / ".."):  # a script at the checkout's root, or one folder down
            script = os.path.normpath(root / wanted.script)
            if Path(script).is_file():
                return f"python {script}"
    if path.name.startswith(CONSOLE_SCRIPT_PREFIXES):
        return wanted.console_script
    return f"python -m {MODULE} {name}"
