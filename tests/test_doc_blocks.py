"""Every fenced code block of README.md and docs/*.md runs as written: pasted, in the page's order,
into a fresh bash (``set -e``) or a fresh Python, in a fresh copy of the repository.

The rule for a block's language tag:
- ``bash``: commands; run in bash, in the page's copy of the repository, with ``python`` on PATH.
- ``python``: run in a fresh interpreter started in the copy (as a user who pastes it there).
- ``text``: not code (a command's output, a file listing, a usage synopsis with ``[optional]``
  parts); never run.
- ``toml``: a configuration snippet; it must parse. ``bibtex``: the citation; not code.
A block without a tag, or with another one, fails the test.

A ``bash`` block that cannot run on a CPU machine without network (a dataset download, a GPU, a
SLURM cluster, hours of training) says so right above it, visibly in the Markdown source:
``<!-- not run in tests: needs ... -->``. Its command lines are then parsed by the real argument
parsers (the script's own ``parse_args``), so a misspelt flag or value still fails. A block that
only takes long (``needs minutes of training ...``, the paper's figures with their defaults) follows
a first try with small settings that runs; ``XRM_DOC_BLOCKS=all`` runs these blocks too.
"""
import argparse
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = ("bash", "python")
NOT_CODE = ("text", "toml", "bibtex")
#: at most this many blocks cannot run here; each says why (a download, a GPU, a cluster, hours of training)
MAX_NOT_RUN = 19
#: blocks that only take minutes (``needs minutes of training``): run only with XRM_DOC_BLOCKS=all
SLOW = "needs minutes of training"
MAX_SLOW = 8
RUN_SLOW = os.environ.get("XRM_DOC_BLOCKS") == "all"
BLOCK_TIMEOUT_S = 600
#: how the lines of a command block begin (the scripts, make, pip, the console scripts)
COMMAND_WORDS = ("python ", "python3 ", "make ", "pip ", "xrm-", "mat-")

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run in tests:\s*(.*?)\s*-->\s*\Z", re.S)
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it starts, its language tag, its text and, for a block that is
    not run, the reason its annotation gives."""
    page: Path
    line: int
    language: str
    body: str
    not_run: str | None

    @property
    def runs(self) -> bool:
        """Whether the test runs it: python and bash blocks, but not those annotated (slow ones only with
        XRM_DOC_BLOCKS=all)."""
        return self.language in RUN and (not self.not_run or (RUN_SLOW and self.not_run.startswith(SLOW)))

    @property
    def name(self) -> str:
        """``page:line`` of the opening fence."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, in order, each with the annotation on the line right above it."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()]
        previous_line = before.rstrip("\n").rsplit("\n", 1)[-1] + "\n"
        annotation = NOT_RUN.search(previous_line)
        found.append(Block(page, before.count("\n") + 1, match.group(1).strip(), match.group(2),
                           annotation.group(1) if annotation else None))
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


def command_lines(body: str) -> list[list[str]]:
    """The commands of a shell block as word lists: continuation lines joined, comments dropped,
    ``&&`` chains split, leading ``NAME=value`` environment assignments removed."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            command = words[:end]
            while command and ENV_ASSIGNMENT.match(command[0]):
                command = command[1:]
            if command:
                commands.append(command)
            words = words[end + 1:]
    return commands


class Parsed(BaseException):
    """Raised by the patched ``parse_args`` once the real one has accepted the arguments: the command
    stops there, before it does any work (a BaseException, so no ``except Exception`` swallows it)."""


def parse_only(run, argv: list[str]) -> None:
    """Run ``run()`` with ``sys.argv = argv`` until its argument parser has parsed them; fail with the
    parser's message if it refuses them."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parsed = original(self, args, namespace)
        if any(action.nargs == argparse.REMAINDER for action in self._actions):
            return parsed  # a dispatcher (python -m XRM.cli <command>): the command's own parser comes next
        raise Parsed()

    saved_argv, saved_path = sys.argv, list(sys.path)
    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = argv
    try:
        run()
    except Parsed:
        return
    except SystemExit as exit_:
        pytest.fail(f"{shlex.join(argv)}: its parser refused it (exit status {exit_.code})")
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv, sys.path[:] = saved_argv, saved_path
    pytest.fail(f"{shlex.join(argv)}: finished without parsing any arguments")


def console_scripts() -> dict[str, str]:
    """pyproject.toml's console scripts: name -> ``module:function``."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def makefile_targets() -> set[str]:
    """The targets the Makefile defines."""
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def check_command(words: list[str]) -> None:
    """Check one command line of a block that is not run, without running it: a script, ``-m`` module or
    console script through its real argument parser; ``make`` by its target; ``pip install`` and
    ``python -m pytest`` by the files they name; a virtualenv's activation by its path."""
    program, arguments = words[0], words[1:]
    if program in ("python", "python3"):
        if arguments[:1] == ["-m"] and arguments[1] == "pytest":
            missing = [path for path in arguments[2:] if not path.startswith("-") and not (ROOT / path).exists()]
            assert missing == [], f"{shlex.join(words)}: no such test files"
        elif arguments[:1] == ["-m"]:
            parse_only(lambda: runpy.run_module(arguments[1], run_name="__main__", alter_sys=True),
                       [arguments[1], *arguments[2:]])
        else:
            script = ROOT / arguments[0]
            assert script.is_file(), f"{shlex.join(words)}: {arguments[0]} does not exist"
            sys.path.insert(0, str(script.parent))  # as python does for a script; parse_only restores it
            parse_only(lambda: runpy.run_path(str(script), run_name="__main__"), [str(script), *arguments[1:]])
    elif program in console_scripts():
        module, function = console_scripts()[program].split(":")
        parse_only(lambda: getattr(__import__(module, fromlist=[function]), function)(), words)
    elif program == "make":
        assert set(arguments) <= makefile_targets(), f"{shlex.join(words)}: the Makefile has no such target"
    elif program == "pip" and arguments[:1] == ["install"]:
        named = [arguments[i + 1] for i, word in enumerate(arguments) if word == "-r"] + \
                [word for word in arguments[1:] if word in (".", "-e")]
        assert named and all((ROOT / path).exists() for path in named if path != "-e"), shlex.join(words)
    elif program in (".", "source"):
        assert arguments[0].endswith("/bin/activate"), f"{shlex.join(words)}: only a virtualenv's activation is checked"
    else:
        pytest.fail(f"{shlex.join(words)}: a command this test cannot check without running it")


def fresh_copy(destination: Path) -> Path:
    """The repository as a fresh clone has it (the files git tracks, and new ones it does not ignore),
    without outputs of earlier runs; everything but .git when it is not a git checkout."""
    listing = None
    if shutil.which("git") and (ROOT / ".git").exists():
        listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 capture_output=True, text=True)
    if listing is None or listing.returncode != 0:
        shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"))
        return destination
    for name in filter(None, listing.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def paste_environment(bin_dir: Path) -> dict[str, str]:
    """The environment of a user's shell: ``python`` (and ``python3``) is this interpreter."""
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "python3"):  # a wrapper, not a link: a virtualenv's python finds its packages by its path
        wrapper = bin_dir / name
        wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
        wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}


def run_block(block: Block, clone: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a block as pasted: bash with ``set -e`` (and pipefail), or ``python -c``, in ``clone``."""
    command = (["bash", "-c", "set -e -o pipefail\n" + block.body] if block.language == "bash"
               else [sys.executable, "-c", block.body])
    return subprocess.run(command, cwd=clone, env=environment, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def test_every_block_says_what_it_is():
    untagged = [block.name for block in ALL_BLOCKS if block.language not in RUN + NOT_CODE]
    assert untagged == [], "tag each block: bash or python (run), text, toml or bibtex (not code)"
    annotated_elsewhere = [block.name for block in ALL_BLOCKS if block.not_run and block.language != "bash"]
    assert annotated_elsewhere == []  # python blocks always run; text is never run
    # a text block that shows commands is a usage synopsis, with [optional] parts: commands to paste are bash
    commands_as_text = [block.name for block in ALL_BLOCKS if block.language == "text" and "[" not in block.body
                        and any(line.startswith(COMMAND_WORDS) for line in block.body.splitlines())]
    assert commands_as_text == []
    assert sum(block.language in RUN for block in ALL_BLOCKS) >= 25


def test_the_blocks_not_run_are_few_and_say_why():
    not_run = [block for block in ALL_BLOCKS if block.not_run]
    slow = [block for block in not_run if block.not_run.startswith(SLOW)]
    assert 0 < len(not_run) - len(slow) <= MAX_NOT_RUN and len(slow) <= MAX_SLOW
    vague = [block.name for block in not_run if not block.not_run.startswith("needs ") or len(block.not_run) < 15]
    assert vague == [], "say what the block needs: 'not run in tests: needs ...'"


@pytest.mark.parametrize("block", [block for block in ALL_BLOCKS if block.not_run], ids=lambda block: block.name)
def test_the_commands_of_a_block_not_run_parse(block):
    commands = command_lines(block.body)
    assert commands
    for words in commands:
        check_command(words)


def test_toml_blocks_parse():
    snippets = [block for block in ALL_BLOCKS if block.language == "toml"]
    assert snippets
    for block in snippets:
        assert tomllib.loads(block.body), block.name


@pytest.mark.parametrize("page", [page for page in PAGES if any(block.runs for block in blocks(page))],
                         ids=lambda page: str(page.relative_to(ROOT)))
def test_the_blocks_of_a_page_run_in_order(page, tmp_path):
    clone = fresh_copy(tmp_path / "clone")
    environment = paste_environment(tmp_path / "bin")
    ran = 0
    for block in blocks(page):
        if not block.runs:
            continue
        result = run_block(block, clone, environment)
        assert result.returncode == 0, f"{block.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{block.name}:\n{result.stderr[-3000:]}"
        ran += 1
    assert ran >= 1


def test_the_checks_catch_what_they_look_for(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- not run in tests: needs a GPU -->\n```bash\nA=1 python main.py --phase 1 \\\n"
                    "    --datasets Synthetic  # comment\nmake demo && make test\n```\n\n```\nuntagged\n```\n")
    first, second = blocks(page)
    assert (first.line, first.language, first.not_run, second.language, second.not_run) == (3, "bash", "needs a GPU", "", None)
    assert command_lines(first.body) == [["python", "main.py", "--phase", "1", "--datasets", "Synthetic"],
                                         ["make", "demo"], ["make", "test"]]
    check_command(["python", "main.py", "--phase", "1", "--datasets", "Synthetic"])
    check_command(["xrm-results", "--dir", "out", "--table", "md"])
    check_command(["python", "-m", "XRM.cli", "reproduce", "--datasets", "Synthetic", "--dry_run"])
    for wrong in (["python", "main.py", "--phase", "1", "--made_up_flag", "3"],
                  ["python", "XRM/read_results.py", "--dir", "out", "--table", "docx"],
                  ["xrm-download", "--no_such_option"],
                  ["python", "benchmarks/sweep_speed.py", "--devise", "cuda"],
                  ["python", "no_such_script.py"], ["make", "no-such-target"], ["curl", "https://example.com"]):
        with pytest.raises(BaseException) as failure:
            check_command(wrong)
        assert failure.type in (AssertionError, pytest.fail.Exception), wrong
