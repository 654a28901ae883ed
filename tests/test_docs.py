"""The documentation stays a short README that links every page of docs/, with no dead links, and
its commands use only the options the scripts accept."""
import re
from pathlib import Path

import pytest

from XRM.cli import reproduce_command, results_command, train_command

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README_MAX_LINES = 320

#: a command's script (as the docs write it) -> the parser that reads its arguments
PARSERS = {"main.py": train_command.get_args_parser, "reproduce.py": reproduce_command.get_args_parser,
           "XRM/read_results.py": results_command.get_args_parser}
#: the same commands installed (console scripts, and python -m XRM.cli <command>): checked where the docs use them
INSTALLED = {"xrm-train": "main.py", "xrm-reproduce": "reproduce.py", "xrm-results": "XRM/read_results.py",
             "-m XRM.cli train": "main.py", "-m XRM.cli reproduce": "reproduce.py", "-m XRM.cli results": "XRM/read_results.py"}

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks and inline code spans (links there are not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def links(text: str) -> list[str]:
    """Every link and image target of a Markdown text, in order."""
    return LINK.findall(prose(text))


def is_relative(target: str) -> bool:
    """Whether a link target is a path in this repository (not a URL, a mail address or an anchor alone)."""
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("#")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def shell_blocks(text: str) -> list[str]:
    """The fenced code blocks of a Markdown text that are not Python (commands and their output)."""
    return [body for language, body in FENCE.findall(text) if language.strip() not in ("python", "py", "bibtex")]


def commands(text: str) -> list[tuple[str, str]]:
    """Every ``python <script> ...`` command of the shell blocks whose script has a parser in PARSERS
    (and every installed one of INSTALLED, as its script), continuation lines joined and the trailing
    comment dropped: (script, arguments)."""
    found = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = line.split()
            if words[:1] == ["python"] and len(words) >= 2:
                words = words[1:]
            for length, names in ((1, PARSERS), (1, INSTALLED), (3, INSTALLED)):
                name = " ".join(words[:length])
                if len(words) >= length and name in names:
                    arguments = " ".join(words[length:]).split(" #", 1)[0]
                    found.append((INSTALLED.get(name, name), " ".join(arguments.split())))
                    break
    return found


def unknown_flags(script: str, arguments: str) -> set[str]:
    """The ``--flags`` of a command line that ``script``'s parser does not accept."""
    parser = PARSERS[script]()
    accepted = {option for action in parser._actions for option in action.option_strings}
    return {flag.split("=", 1)[0] for flag in FLAG.findall(arguments)} - accepted


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move sections into docs/"
    # the commands CI and a first reader run, and the section tests/test_library_api.py executes
    assert "make test" in README.read_text() and "make demo" in README.read_text()
    assert "## Tests" in lines and "## MAT in your own training loop" in lines


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_and_image_points_to_a_file_and_a_heading(page):
    targets = [target for target in links(page.read_text()) if is_relative(target) or target.startswith("#")]
    assert targets or page != README  # the README links its pages
    missing, dead_anchors = set(), set()
    for target in targets:
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            missing.add(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            dead_anchors.add(target)
    assert missing == set(), f"{page.name} links to files that do not exist"
    assert dead_anchors == set(), f"{page.name} links to headings that do not exist"


def test_every_docs_page_is_linked_from_the_readme():
    assert len(PAGES) >= 9
    linked = {(README.parent / target.partition("#")[0]).resolve()
              for target in links(README.read_text()) if is_relative(target)}
    not_linked = {page.name for page in PAGES} - {path.name for path in linked if path.parent == DOCS}
    assert not_linked == set()


def test_readme_commands_use_only_flags_the_scripts_accept():
    found = commands(README.read_text())
    assert {script for script, _ in found} == set(PARSERS)  # a command of each script is checked
    unknown = {(script, flag) for script, arguments in found for flag in unknown_flags(script, arguments)}
    assert unknown == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_docs_commands_use_only_flags_the_scripts_accept(page):
    unknown = {(script, flag) for script, arguments in commands(page.read_text())
               for flag in unknown_flags(script, arguments)}
    assert unknown == set()


def test_the_checks_catch_what_they_look_for(tmp_path):
    text = ("```\npython main.py --phase 1 --made_up_flag 3 \\\n    --out_dir out   # a comment --not_a_flag\n"
            "python XRM/read_results.py --dir out [--seed 0] --tabel md\npython download.py --anything\n```\n"
            "```python\npython main.py --in_python_code\n```\n")
    found = commands(text)
    assert found == [("main.py", "--phase 1 --made_up_flag 3 --out_dir out"),
                     ("XRM/read_results.py", "--dir out [--seed 0] --tabel md")]
    installed = "```\nxrm-train --phase 1 --made_up 1\npython -m XRM.cli results --out_dir out --tabel md\n```\n"
    assert commands(installed) == [("main.py", "--phase 1 --made_up 1"), ("XRM/read_results.py", "--out_dir out --tabel md")]
    assert unknown_flags(*found[0]) == {"--made_up_flag"}
    assert unknown_flags(*found[1]) == {"--tabel"}
    assert unknown_flags("reproduce.py", "--true_groups --num_seeds=3 --phase 2") == {"--phase"}
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n## Two `words`: here\n\nSee [x](missing.md), ![y](figures/none.png), "
                    "[z](#two-words-here), [w](#nowhere), `[code](not_a_link.md)` and [u](https://example.org).\n")
    assert links(page.read_text()) == ["missing.md", "figures/none.png", "#two-words-here", "#nowhere",
                                       "https://example.org"]
    assert anchors(page) == {"a-page", "two-words-here"}
    assert [target for target in links(page.read_text()) if is_relative(target)] == ["missing.md", "figures/none.png"]
