"""Reading policy files: YAML with source positions, and every mistake reported at once as file:line:column.

PyYAML alone loses positions and silently keeps the last of two duplicate keys. Here the document is composed
into nodes first, which gives: YAML syntax errors with their mark (tabs, bad indentation); duplicate keys found
and rejected; a map from each field path to its line and column. Pydantic's validation errors are then translated
into `PolicyProblem`s that name the file, line, column, field path and a reason written for the person editing
the file (unknown keys get the closest known key). Literal secrets are found on the raw document, before the
schema, so that a misplaced `password:` is reported as a secret and its value never appears in any message.

Nothing here knows the policy's fields: the schema is passed in as a pydantic model class.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

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


# ---------------------------------------------------------------- inline secrets

_SECRET_WORDS = {"password", "passwd", "pwd", "secret", "token", "apikey", "credential", "credentials"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("auth", "token")}


def is_secret_key(key: str) -> bool:
    """`password`, `api_key`, `redis_token`… but not their references (`password_env`, `api_key_file`)."""
    words = [w for w in re.split(r"[_\-.\s]+", key.lower()) if w]
    if not words or words[-1] in {"env", "file", "path"}:
        return False
    return any(w in _SECRET_WORDS for w in words) or any(p in _SECRET_PAIRS for p in itertools.pairwise(words))


def find_inline_secrets(doc: Document, model: type[BaseModel]) -> list[tuple[Loc, PolicyProblem]]:
    """Keys named like a secret holding a literal value, wherever they are in the file."""
    out: list[tuple[Loc, PolicyProblem]] = []

    def walk(value: Any, loc: Loc) -> None:
        if isinstance(value, dict):
            here = model_at(model, loc)
            known = here.model_fields if here else {}
            for k, v in value.items():
                literal = v not in (None, "") and not isinstance(v, dict | list)
                if isinstance(k, str) and k not in known and is_secret_key(k) and literal:
                    refs = _reference_fields(here)
                    hint = " or ".join(refs) if refs else "a *_env or *_file reference"
                    reason = (
                        "inline secret: never write a secret in a policy file (it is copied, diffed and "
                        f"logged); put it in an environment variable or a credential file and use {hint}"
                    )
                    out.append(((*loc, k), doc.problem((*loc, k), reason, at_key=True)))
                else:
                    walk(v, (*loc, k))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*loc, i))

    walk(doc.data, ())
    return out


def _reference_fields(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [n for n in model.model_fields if n.endswith(("_env", "_file")) and is_secret_key(n.rsplit("_", 1)[0])]


# ---------------------------------------------------------------- pydantic errors → problems


def concrete_types(tp: Any) -> list[Any]:
    """The concrete types an annotation can hold (Optional and Annotated removed)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return concrete_types(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in typing.get_args(tp) for t in concrete_types(arg) if t is not type(None)]
    return [tp]


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the value at `loc` (None when `loc` is not inside a model)."""
    current: list[Any] = [model]
    for part in loc:
        nxt: list[Any] = []
        for tp in current:
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
                if part in tp.model_fields:
                    nxt += concrete_types(tp.model_fields[part].annotation)
            elif typing.get_origin(tp) is list and isinstance(part, int):
                nxt += concrete_types(typing.get_args(tp)[0])
            elif typing.get_origin(tp) is dict and isinstance(part, str):
                nxt += concrete_types(typing.get_args(tp)[1])
        current = nxt
    models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
    return models[0] if models else None


@functools.cache
def _field_homes(model: type[BaseModel]) -> dict[str, list[str]]:
    """field name → the sections that have it, e.g. 'min_samples' → ['windows']."""
    out: dict[str, list[str]] = {}

    def walk(m: type[BaseModel], prefix: str, depth: int) -> None:
        for name, info in m.model_fields.items():
            out.setdefault(name, []).append(prefix or "the top level")
            for tp in concrete_types(info.annotation):
                path, inner = (f"{prefix}.{name}" if prefix else name), tp
                if typing.get_origin(tp) is list:
                    path, inner = path + "[]", concrete_types(typing.get_args(tp)[0])[0]
                elif typing.get_origin(tp) is dict:
                    path, inner = path + ".<name>", concrete_types(typing.get_args(tp)[1])[0]
                if isinstance(inner, type) and issubclass(inner, BaseModel) and depth < 8:
                    walk(inner, path, depth + 1)

    walk(model, "", 0)
    return out


def unknown_key_reason(model: type[BaseModel], loc: Loc) -> str:
    key = str(loc[-1])
    here = model_at(model, loc[:-1])
    known = list(here.model_fields) if here else []
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}'; did you mean '{close[0]}'?"
    homes = [h for h in _field_homes(model).get(key, []) if h != loc_to_path(loc[:-1])]
    if homes:
        return f"unknown key '{key}' here; it belongs under {homes[0]}"
    return f"unknown key '{key}'; known keys here: {', '.join(known)}"


def missing_reason(model: type[BaseModel], loc: Loc) -> str:
    """'required key …' plus the field's description, when the schema gives one."""
    here = model_at(model, loc[:-1])
    info = here.model_fields.get(str(loc[-1])) if here else None
    why = f": {info.description}" if info and info.description else ""
    return f"required key '{loc[-1]}' is missing{why}"


def describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_NUMBER_RE = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


def error_reason(err: Any) -> str:
    """A reason written for the person editing the file, from one pydantic error."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "int_type":
        if isinstance(value, str) and _NUMBER_RE.match(value):
            return f"expected a number, got the string {value!r}; remove the quotes"
        return f"expected a whole number, got {describe(value)}"
    if kind == "float_type":
        return f"expected a number, got {describe(value)}"
    if kind == "bool_type":
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return f"expected true or false, got the string {value!r}; remove the quotes"
        return f"expected true or false, got {describe(value)}"
    if kind == "string_type":
        return f"expected text, got {describe(value)}; put it in quotes if it is meant as text"
    if kind == "list_type":
        return f"expected a list ('- item' lines or [a, b]), got {describe(value)}"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"expected a mapping (indented 'key: value' lines), got {describe(value)}"
    if kind == "literal_error":
        return f"must be {ctx['expected']} (got {describe(value)})"
    bounds = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most"}
    if kind in bounds or kind == "less_than":
        limit = next(iter(ctx.values()))
        return f"must be {bounds.get(kind, 'less than')} {limit} (got {value})"
    if kind == "too_short":
        if isinstance(value, str):
            return "must not be empty"
        return f"must have at least {ctx['min_length']} item{'s' if ctx['min_length'] != 1 else ''}"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def problems_from(exc: ValidationError, doc: Document, model: type[BaseModel], skip: set[Loc]) -> list[PolicyProblem]:
    """Translate every pydantic error; errors at or under a `skip` location (already reported) are dropped."""
    out: list[PolicyProblem] = []
    for err in exc.errors():
        loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if any(loc[: len(s)] == s for s in skip):
            continue
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, FieldProblems):
            out += [doc.problem((*loc, *sub), msg) for sub, msg in error.items]
        elif err["type"] == "extra_forbidden":
            out.append(doc.problem(loc, unknown_key_reason(model, loc), at_key=True))
        elif err["type"] == "missing":
            out.append(doc.problem(loc, missing_reason(model, loc)))
        else:
            out.append(doc.problem(loc, error_reason(err)))
    return out


def sort_problems(problems: list[PolicyProblem]) -> list[PolicyProblem]:
    """In file order; problems without a position first."""
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))
