"""Reading policy files: YAML with source positions, and every mistake reported at once as file:line:column.

PyYAML alone loses positions and silently keeps the last of two duplicate keys. Here the document is composed
into nodes first, which gives: YAML syntax errors with their mark (tabs, bad indentation); duplicate keys found
and rejected; a map from each field path to its line and column, so that every problem (policy_errors.py turns
validation errors into them) names the file, line, column, field path and reason.

Nothing here knows the policy's fields.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trafficd.errors import ConfigError

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    file: str
    field: str  # dotted path, e.g. regions.us-east.dns.endpoint
    reason: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = self.field or "(top level)"
        return f"{where}: {field}: {self.reason}"


class PolicyError(ConfigError):
    """A policy file that cannot be used; carries every problem found."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FieldProblems(ValueError):  # a ValueError: pydantic turns only those into validation errors
    """Raised by a model validator with several problems, each at its own path relative to that model."""

    def __init__(self, items: list[tuple[Loc, str]]) -> None:
        self.items = items
        super().__init__("; ".join(f"{loc_to_path(loc) or '(top level)'}: {msg}" for loc, msg in items))


def sort_problems(problems: list[PolicyProblem]) -> list[PolicyProblem]:
    """In file order; problems without a position first."""
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def loc_to_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# ---------------------------------------------------------------- YAML with positions


@dataclass
class Document:
    """A parsed YAML document: its data and where each value (and each mapping key) starts, 1-based."""

    path: str
    data: Any
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    collections: set[Loc] = field(default_factory=set)
    duplicates: list[PolicyProblem] = field(default_factory=list)

    def problem(self, loc: Loc, reason: str, *, at_key: bool = False) -> PolicyProblem:
        """A problem at `loc`, placed on the key for a mapping/list (or when asked), else on the value."""
        pos = self.position(loc, at_key=at_key)
        line, column = pos if pos else (None, None)
        return PolicyProblem(self.path, loc_to_path(loc), reason, line, column)

    def position(self, loc: Loc, *, at_key: bool = False) -> tuple[int, int] | None:
        for n in range(len(loc), -1, -1):  # the nearest ancestor that exists in the file
            sub = loc[:n]
            if (at_key or sub in self.collections or n < len(loc)) and sub in self.keys:
                return self.keys[sub]
            if sub in self.values:
                return self.values[sub]
        return None


MAX_BYTES = 1024 * 1024  # a policy is a few KiB; 1 MiB leaves room and keeps parsing well under a second
MAX_NODES = 20_000  # values after alias expansion; example.yaml has ~250 (aliases can expand exponentially)
MAX_DEPTH = 64  # nesting levels; the schema needs 6
_MAX_NODES = MAX_NODES


# libyaml (C) composes ~10× faster; the pure-Python loader's messages are clearer, so a file that fails to parse
# is read again with it to describe the problem.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str, path: str) -> Document:
    """Parse one YAML document within the size, node and depth limits. Raises `PolicyError` for a file over a
    limit, a syntax error or an empty file."""
    if len(text) > MAX_BYTES:
        raise PolicyError([too_large(path, len(text.encode("utf-8", "replace")))])
    try:
        return _compose(text, path, _FAST_LOADER)
    except (yaml.YAMLError, RecursionError):
        try:
            return _compose(text, path, yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            raise PolicyError([_syntax_problem(exc, path, text)]) from None
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow
            line = text.count("\n", 0, exc.position) + 1
            column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
            char = exc.character if isinstance(exc.character, int) else ord(exc.character)
            reason = f"not valid YAML: the control character U+{char:04X} is not allowed; delete it"
            raise PolicyError([PolicyProblem(path, "", reason, line, column)]) from None
        except (yaml.YAMLError, RecursionError) as exc:
            reason = f"not valid YAML: {_first_line(exc)}"
            raise PolicyError([PolicyProblem(path, "", reason)]) from None


def too_large(path: str, size: int) -> PolicyProblem:
    return PolicyProblem(
        path,
        "",
        f"the file is {size} bytes, more than the {MAX_BYTES} bytes (1 MiB) a policy may have; is it the right file?",
    )


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return f"nested more than {MAX_DEPTH} levels deep"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _check_size(root: yaml.Node, path: str) -> None:
    """Refuse, before anything walks the data, a document that nests too deep or expands (through aliases, which
    share nodes) to more than MAX_NODES values: an alias bomb is refused in time linear in the file."""
    expanded: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in expanded:
            continue
        kids = _children(node)
        if not children_done:
            if id(node) in on_path:
                raise PolicyError([_limit_problem(path, node, "an alias refers to the value that contains it")])
            on_path.add(id(node))
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in expanded)
            continue
        on_path.discard(id(node))
        expanded[id(node)] = 1 + sum(expanded[id(k)] for k in kids)
        depth[id(node)] = 1 + max((depth[id(k)] for k in kids), default=0)
        if expanded[id(node)] > MAX_NODES:
            why = f"it expands to more than {MAX_NODES} values (YAML aliases '*' repeat what an anchor '&' names)"
            raise PolicyError([_limit_problem(path, node, why)])
        if depth[id(node)] > MAX_DEPTH:
            raise PolicyError([_limit_problem(path, node, f"it is nested more than {MAX_DEPTH} levels deep")])


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _limit_problem(path: str, node: yaml.Node, why: str) -> PolicyProblem:
    line, column = _mark(node)
    return PolicyProblem(
        path, "", f"refused: {why}; a policy needs nothing like this: write the values out", line, column
    )


def _compose(text: str, path: str, loader_class: Any) -> Document:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            what = "the file is empty" if not text.strip() else "the file has nothing but comments"
            raise PolicyError([PolicyProblem(path, "", f"{what}; a policy starts with 'version: 1'")])
        _check_size(node, path)
        duplicates = _find_duplicate_keys(node, path)  # before construction flattens `<<:` merges in place
        doc = Document(path, loader.construct_document(node), duplicates=duplicates)
    finally:
        loader.dispose()
    _record_positions(node, (), doc, set())
    return doc


def _syntax_problem(exc: yaml.MarkedYAMLError, path: str, text: str) -> PolicyProblem:
    """The YAML error at the line that caused it (the parser often notices one line later), with a fix hint."""
    problem = exc.problem or str(exc)
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    opened = exc.context_mark.line + 1 if exc.context_mark else None
    if "'\\t'" in problem:
        reason = "not valid YAML: a tab character; indent with spaces only"
    elif problem.startswith("expected <block end>"):
        reason = "not valid YAML: bad indentation; this line does not line up with the keys above it"
    elif problem == "mapping values are not allowed here" and line is not None:
        culprit = _key_without_colon(text, line)
        if culprit is not None:
            line, column = culprit, _indent(text, culprit) + 1
            reason = "not valid YAML: this line has no ':' after its key; write 'key: value'"
        elif _deeper_than_sibling(text, line):
            column = _indent(text, line) + 1
            reason = "not valid YAML: this line is indented deeper than the key above it; line it up with its siblings"
        else:
            reason = "not valid YAML: unexpected ':'; check the indentation, or quote a value that contains ': '"
    elif exc.context == "while scanning a quoted scalar" and exc.context_mark is not None:
        line, column = opened, exc.context_mark.column + 1
        reason = "not valid YAML: this quoted value is never closed; add the closing quote"
    elif (exc.context or "").startswith("while parsing a flow") and exc.context_mark is not None:
        closing = "]" if "sequence" in (exc.context or "") else "}"
        line, column = opened, exc.context_mark.column + 1
        reason = f"not valid YAML: this '{'[' if closing == ']' else '{'}' is never closed; add the '{closing}'"
    else:
        reason = f"not valid YAML: {problem}"
    return PolicyProblem(path, "", reason, line, column)


def _key_without_colon(text: str, line: int) -> int | None:
    """The line before `line` (skipping blanks and comments) when it is a bare word run on into `line`'s key:
    `total_p99 3s` followed by `ttft_p99: 1s` is read as one scalar, and the ':' on the next line is the error."""
    lines = text.splitlines()
    for n in range(line - 2, -1, -1):
        prev = lines[n].split(" #", 1)[0].strip()
        if not prev or prev.startswith("#"):
            continue
        bare = ":" not in prev and not prev.startswith(("-", "[", "{", "'", '"'))
        same_indent = _indent(text, n + 1) == _indent(text, line)
        return n + 1 if bare and same_indent else None
    return None


def _deeper_than_sibling(text: str, line: int) -> bool:
    """The previous key line has a value on it (`total_p99: 3s`) and this line is indented deeper."""
    lines = text.splitlines()
    for n in range(line - 2, -1, -1):
        prev = lines[n].split(" #", 1)[0].strip()
        if not prev or prev.startswith("#"):
            continue
        _key, colon, value = prev.partition(": ")
        return bool(colon and value.strip()) and _indent(text, line) > _indent(text, n + 1)
    return False


def _indent(text: str, line: int) -> int:
    row = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    return len(row) - len(row.lstrip(" "))


def _find_duplicate_keys(root: yaml.Node, path: str) -> list[PolicyProblem]:
    """Before construction (which would keep only the last one); merge keys (`<<:`) may be overridden."""
    out: list[PolicyProblem] = []
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        node, loc = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node.value))
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                stack.append((value, loc))
                continue
            stack.append((value, (*loc, key.value)))
            if key.value not in first:
                first[key.value] = key
                continue
            line, column = _mark(key)
            reason = (
                f"duplicate key '{key.value}' (first at line {first[key.value].start_mark.line + 1}); YAML would "
                "silently keep only the last one: merge them into one"
            )
            out.append(PolicyProblem(path, loc_to_path((*loc, key.value)), reason, line, column))
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _record_positions(node: yaml.Node, loc: Loc, doc: Document, active: set[int]) -> None:
    if id(node) in active or len(doc.values) > _MAX_NODES:
        return  # a recursive alias, or an alias bomb
    doc.values[loc] = _mark(node)  # the last of a merged and an explicit key wins, as in the data
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        doc.collections.add(loc)
        active.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                _record_positions(item, (*loc, i), doc, active)
        else:
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    doc.keys[(*loc, key.value)] = _mark(key)
                    _record_positions(value, (*loc, key.value), doc, active)
        active.discard(id(node))


# ---------------------------------------------------------------- the file itself


def unsafe_mode(path: str, mode: int, what: str) -> str | None:
    """Why a file must not be trusted, like sshd's StrictModes: anyone who can write it steers the daemons."""
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "world" if mode & stat.S_IWOTH else "group"
        return (
            f"the {what} is {who}-writable (mode {stat.S_IMODE(mode):04o}): anyone who can write it could steer "
            f"traffic or read secrets; run 'chmod go-w {path}'"
        )
    return None


def read_policy_text(path: Path) -> str:
    """The file's text, refused (PolicyError) when group/world-writable or larger than MAX_BYTES; reads at most
    MAX_BYTES + 1 bytes. OSError and UnicodeDecodeError pass through."""
    with path.open("rb") as f:
        info = os.fstat(f.fileno())
        unsafe = unsafe_mode(str(path), info.st_mode, "policy file")
        if unsafe:
            raise PolicyError([PolicyProblem(str(path), "", unsafe)])
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise PolicyError([too_large(str(path), max(info.st_size, len(data)))])
    return data.decode("utf-8")
