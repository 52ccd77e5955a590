"""The documentation stays true to the repository: links resolve, commands exist, modules are listed.

README.md and docs/*.md are read as text; nothing is imported but the command-line parser.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from dposhap.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "python" / "dposhap"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DESIGN = ROOT / "docs" / "design.md"

#: ``[text](target)`` with an optional title; images (``![..](..)``) are links too.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _links(page: Path) -> list[str]:
    return LINK.findall(_prose(page.read_text(encoding="utf-8")))


def _anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives a page: lowercase, punctuation dropped, spaces to hyphens."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_the_pages_exist_and_have_links() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "design.md", "install.md", "training.md", "valuing.md"} <= names
    assert len(_links(ROOT / "README.md")) >= 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    problems = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            problems.append(f"{target}: links outside the repository")
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: points outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_checks_read_what_they_should(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A title: `x`\n\n[ok](#a-title-x) [bad](missing.md) `[code](not-a-link.md)`\n\n"
        "```python\nfrom dposhap import value_run\n```\n`dposhap reward train` and `dposhap nosuch`, dposhap trains\n"
    )
    assert _links(page) == ["#a-title-x", "missing.md"]
    assert _anchors(page) == {"a-title-x"}
    assert _commands_named(page.read_text()) == [("reward", "train", []), ("nosuch", "", [])]
    assert _commands_named("```\ndposhap value RUN --budget 5 \\\n  --tol 1 # --no\n```") == [
        ("value", "", ["--budget", "--tol"])
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_about_how_the_project_is_developed(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for phrase in ("2-core", "lent", "../shared", "our machine", "project's machine"):
        assert not re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, re.IGNORECASE), (
            f"{page.relative_to(ROOT)} mentions {phrase!r}: measured figures and their machine belong in "
            "bench/RESULTS.md"
        )
    assert "DESIGN.md" not in text, f"{page.relative_to(ROOT)} cites a design file outside the repository"


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the detail into docs/"


def _parsers() -> dict[tuple[str, str], set[str]]:
    """The option strings of every CLI command, keyed by (command, sub-command or "")."""
    import argparse

    def children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def options(parser: argparse.ArgumentParser) -> set[str]:
        return {option for action in parser._actions for option in action.option_strings}

    parsers: dict[tuple[str, str], set[str]] = {}
    for name, command in children(build_parser()).items():
        parsers[(name, "")] = options(command)
        for sub_name, sub in children(command).items():
            parsers[(name, sub_name)] = options(sub)
    return parsers


#: ``dposhap COMMAND [SUB] [ARGS]`` in a line of code; not ``import dposhap``, ``pip install dposhap``.
COMMAND = re.compile(
    r"(?<![\w.'\[/-])(?<!from )(?<!import )(?<!install )dposhap ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?([^#`]*)"
)


def _commands_named(text: str) -> list[tuple[str, str, list[str]]]:
    """``dposhap COMMAND [SUB]`` and its ``--flags``, as written in the code of a page.

    Code is fenced blocks (a line ending in ``\\`` goes on) and inline code; a ``#`` comment,
    ``&&`` or ``;`` ends a command.
    """
    snippets = [block.group(0).replace("\\\n", " ") for block in FENCE.finditer(text)]
    snippets += INLINE_CODE.findall(FENCE.sub("", text))
    found = []
    for snippet in snippets:
        for line in snippet.splitlines():
            for match in COMMAND.finditer(line):
                rest = re.split(r"&&|;|\|", match.group(3))[0]
                found.append((match.group(1), match.group(2) or "", re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest)))
    return found


def test_every_dposhap_command_and_flag_in_the_docs_exists() -> None:
    parsers = _parsers()
    commands = {command for command, _ in parsers}
    assert {"train", "value", "select", "reward"} <= commands and ("reward", "train") in parsers
    unknown = []
    checked = 0
    for page in PAGES:
        for command, sub, flags in _commands_named(page.read_text(encoding="utf-8")):
            if command not in commands:
                unknown.append(f"{page.name}: dposhap {command}")
                continue
            has_subs = any(c == command and s for c, s in parsers)
            if has_subs and (command, sub) not in parsers:
                unknown.append(f"{page.name}: dposhap {command} {sub}")
                continue
            name = f"{command} {sub}" if has_subs else command
            options = parsers[(command, sub if has_subs else "")]
            unknown += [f"{page.name}: dposhap {name} {flag}" for flag in flags if flag not in options]
            checked += len(flags)
    assert not unknown, "commands and flags the CLI does not have: " + ", ".join(sorted(set(unknown)))
    assert checked >= 30


def test_every_module_is_in_the_architecture_table() -> None:
    design = DESIGN.read_text(encoding="utf-8")
    missing = [
        path.relative_to(PACKAGE).as_posix()
        for path in sorted(PACKAGE.rglob("*.py"))
        if f"`{path.relative_to(PACKAGE).as_posix()}`" not in design
    ]
    assert not missing, f"docs/design.md, section 3, does not list: {', '.join(missing)}"


def _imports_of(module_path: str) -> set[str]:
    """Every ``dposhap`` module a module or package (``evaluate/``) imports, at any depth."""
    target = PACKAGE / module_path.rstrip("/")
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    imported: set[str] = set()
    for file in files:
        parts = list(file.relative_to(PACKAGE).with_suffix("").parts)
        package = parts if parts[-1] == "__init__" else parts[:-1]
        package = [p for p in package if p != "__init__"]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    names = [".".join(base + ([node.module] if node.module else []))]
                    if not node.module:
                        names = [".".join([*base, alias.name]) for alias in node.names]
                elif node.module and node.module.startswith("dposhap"):
                    names = [node.module.removeprefix("dposhap").lstrip(".")]
                else:
                    continue
                imported.update(names)
    return imported


def test_the_architecture_diagram_draws_real_imports() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    diagram = re.search(r"```mermaid\n(.*?)```", text, re.DOTALL)
    assert diagram, "docs/design.md has no mermaid diagram"
    labels = dict(re.findall(r"(\w+)\[([^\]]+)\]", diagram.group(1)))
    edges = []
    for line in diagram.group(1).splitlines():
        if "-->" not in line:
            continue
        left, right = line.split("-->")
        sources = [re.findall(r"\w+", s)[0] for s in left.split("&")]
        targets = [re.findall(r"\w+", t)[0] for t in right.split("&")]
        edges += [(s, t) for s in sources for t in targets]
    assert len(edges) >= 20
    wrong = []
    for source, target in edges:
        module = labels[target].rstrip("/").replace("/", ".")
        imported = _imports_of(labels[source])
        if not any(name == module or name.startswith(module + ".") for name in imported):
            wrong.append(f"{labels[source]} --> {labels[target]}")
    assert not wrong, "the diagram draws imports the code does not have: " + ", ".join(wrong)
