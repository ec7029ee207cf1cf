"""Meta-tests that keep the plugin system honest, and what they share with tests/test_docs.py:
the hook specifications as the spec modules define them, and docs/hooks.md read as sections.

The specifications are the source of truth: every list here is derived from them with
``inspect``, never written out by hand, so a new hook is noticed by every meta-test at once.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sealrelay.hookspecs import HOOK_PREFIX, PROJECT_NAME, SPEC_MODULES


REPO = Path(__file__).resolve().parents[2]
HOOKS_DOC = REPO / "docs" / "hooks.md"
WRITING_PLUGINS_DOC = REPO / "docs" / "writing-plugins.md"
HOOK_TESTS = REPO / "tests" / "test_hooks.py"

#: The attribute pluggy's HookspecMarker("sealrelay") puts on a specification.
SPEC_MARKER = f"{PROJECT_NAME}_spec"


@attrs.frozen
class HookSpec:
    """One hook as its specification defines it."""

    name: str
    arguments: tuple[str, ...]
    module: str
    function: Callable[..., Any] = attrs.field(repr=False)
    firstresult: bool
    historic: bool

    @property
    def signature(self) -> str:
        """``name(arg, ...)``: how docs/hooks.md heads the hook's section."""
        return f"{self.name}({', '.join(self.arguments)})"

    @property
    def kind(self) -> str:
        """``firstresult``, ``historic`` or ``collect-all``, as the docs name the kinds."""
        if self.firstresult:
            return "firstresult"
        return "historic" if self.historic else "collect-all"


def spec_functions() -> list[tuple[str, Callable[..., Any]]]:
    """(module, function) for every function defined in a spec module, marked or not."""
    found: list[tuple[str, Callable[..., Any]]] = []
    for module_name in SPEC_MODULES:
        module = importlib.import_module(module_name)
        for _, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ == module_name:
                found.append((module_name, function))
    return found


def hookspecs() -> list[HookSpec]:
    """Every hook specification in the spec modules, in module order."""
    specs = []
    for module_name, function in spec_functions():
        options = getattr(function, SPEC_MARKER, None)
        if options is None:
            continue
        specs.append(
            HookSpec(
                name=function.__name__,
                arguments=tuple(inspect.signature(function).parameters),
                module=module_name,
                function=function,
                firstresult=bool(options.get("firstresult")),
                historic=bool(options.get("historic")),
            )
        )
    return specs


def hook_names() -> list[str]:
    return [spec.name for spec in hookspecs()]


#: A hook section's heading: ``## `sealrelay_name(arg, arg)` ``.
HOOK_HEADING = re.compile(r"^## `(?P<name>\w+)\((?P<arguments>[^)]*)\)`\s*$")
_HEADING = re.compile(r"^(?P<level>#{1,6}) ")
_FENCE = re.compile(r"^\s*(```|~~~)")


@attrs.frozen
class DocSection:
    """The part of a markdown page under one hook heading, up to the next heading of the same
    or a higher level (code fences are skipped: a ``#`` comment in a block is no heading)."""

    name: str
    arguments: tuple[str, ...]
    line: int
    body: str

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(self.arguments)})"

    def field(self, label: str) -> str | None:
        """The text after ``**<label>:**`` at the start of a line, up to the paragraph's end."""
        match = re.search(
            rf"^\*\*{re.escape(label)}:\*\*\s*(?P<text>.*?)(?:\n\s*\n|\Z)",
            self.body,
            re.MULTILINE | re.DOTALL,
        )
        return " ".join(match.group("text").split()) if match else None


def _headings(lines: list[str]) -> list[tuple[int, int]]:
    """(line index, level) of every heading outside code fences."""
    found: list[tuple[int, int]] = []
    fenced = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            found.append((index, len(match.group("level"))))
    return found


def hook_sections(path: Path = HOOKS_DOC) -> list[DocSection]:
    """Every ``## `sealrelay_...(...)` `` section of *path*, in page order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    headings = _headings(lines)
    sections = []
    for position, (index, level) in enumerate(headings):
        match = HOOK_HEADING.match(lines[index])
        if level != 2 or match is None or not match.group("name").startswith(HOOK_PREFIX):
            continue
        end = next((i for i, lvl in headings[position + 1 :] if lvl <= level), len(lines))
        arguments = tuple(a.strip() for a in match.group("arguments").split(",") if a.strip())
        sections.append(
            DocSection(
                name=match.group("name"),
                arguments=arguments,
                line=index + 1,
                body="\n".join(lines[index + 1 : end]),
            )
        )
    return sections


@attrs.frozen
class CodeBlock:
    """A fenced ```python block of a markdown page."""

    path: Path
    #: The line of the opening fence, 1-based, for messages that point at the page.
    line: int
    source: str

    @property
    def location(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """The file the block says it is, from a first line like ``# partner_policy.py``."""
        first = self.source.lstrip().splitlines()[0] if self.source.strip() else ""
        match = re.fullmatch(r"#\s*(?P<file>[\w./-]+\.py)\s*", first)
        return match.group("file") if match else None

    @property
    def module_name(self) -> str | None:
        """The importable module the file is: ``pkg/__init__.py`` -> ``pkg``,
        ``tests/test_x.py`` -> ``test_x`` (pytest puts the test's directory on sys.path)."""
        if self.file_name is None:
            return None
        path = Path(self.file_name)
        if path.name == "__init__.py":
            return path.parent.name
        return path.stem


def python_blocks(path: Path) -> list[CodeBlock]:
    """Every fenced block whose info string is exactly ``python``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    start: int | None = None
    language = ""
    for index, line in enumerate(lines):
        if start is None and (match := re.match(r"^```(?P<info>\S*)\s*$", line)):
            start, language = index, match.group("info")
        elif start is not None and line.strip() == "```":
            if language == "python":
                source = "\n".join(lines[start + 1 : index]) + "\n"
                blocks.append(CodeBlock(path=path, line=start + 1, source=source))
            start = None
    return blocks
