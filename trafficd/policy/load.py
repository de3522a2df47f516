"""Reading policy files: YAML with source positions, and every mistake reported at once as file:line:column.

PyYAML alone loses positions and silently keeps the last of two duplicate keys. Here the document is composed
into nodes first, which gives: YAML syntax errors with their mark (tabs, bad indentation); duplicate keys found
and rejected; a map from each field path to its line and column, so that every problem (policy_errors.py turns
validation errors into them) names the file, line, column, field path and reason.

Nothing here knows the policy's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

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


class PolicyError(Exception):
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


_MAX_NODES = 100_000  # aliases can expand exponentially; a policy file is far smaller than this


# libyaml (C) composes ~10× faster; the pure-Python loader's messages are clearer, so a file that fails to parse
# is read again with it to describe the problem.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str, path: str) -> Document:
    """Parse one YAML document. Raises `PolicyError` for a syntax error or an empty file."""
    try:
        return _compose(text, path, _FAST_LOADER)
    except yaml.YAMLError:
        try:
            return _compose(text, path, yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            raise PolicyError([_syntax_problem(exc, path)]) from None


def _compose(text: str, path: str, loader_class: Any) -> Document:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            what = "the file is empty" if not text.strip() else "the file has nothing but comments"
            raise PolicyError([PolicyProblem(path, "", f"{what}; a policy starts with 'version: 1'")])
        duplicates = _find_duplicate_keys(node, path)  # before construction flattens `<<:` merges in place
        doc = Document(path, loader.construct_document(node), duplicates=duplicates)
    finally:
        loader.dispose()
    _record_positions(node, (), doc, set())
    return doc


def _syntax_problem(exc: yaml.MarkedYAMLError, path: str) -> PolicyProblem:
    problem = exc.problem or str(exc)
    mark = exc.problem_mark or exc.context_mark
    if "'\\t'" in problem:
        reason = "not valid YAML: a tab character; indent with spaces only"
    elif problem.startswith("expected <block end>"):
        reason = "not valid YAML: bad indentation; this line does not line up with the keys above it"
    elif problem == "mapping values are not allowed here":
        reason = "not valid YAML: unexpected ':'; check the indentation, or quote a value that contains ': '"
    else:
        reason = f"not valid YAML: {problem}"
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return PolicyProblem(path, "", reason, line, column)


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
