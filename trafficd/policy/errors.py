"""Translating mistakes into problems people can act on: inline secrets, unknown keys, pydantic errors.

Works on a `Document` (policy_load.py) and a pydantic model class; knows no policy field by name. Unknown keys get
the closest known key, or the section they belong to; missing keys get the field's description; a secret found
in the raw document is reported by its key, and its value never appears in any message.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from trafficd.policy.load import Document, FieldProblems, Loc, PolicyProblem, loc_to_path

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
    for step in (_type_reason, _limit_reason):
        reason = step(kind, value, ctx)
        if reason is not None:
            return reason
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _quoted_reason(kind: str, value: Any) -> str | None:
    """A number or a boolean written in quotes."""
    if kind == "int_type" and isinstance(value, str) and _NUMBER_RE.match(value):
        return f"expected a number, got the string {value!r}; remove the quotes"
    if kind == "bool_type" and isinstance(value, str) and value.lower() in {"true", "false"}:
        return f"expected true or false, got the string {value!r}; remove the quotes"
    return None


_EXPECTED = {
    "int_type": "expected a whole number, got {}",
    "float_type": "expected a number, got {}",
    "bool_type": "expected true or false, got {}",
    "string_type": "expected text, got {}; put it in quotes if it is meant as text",
    "list_type": "expected a list ('- item' lines or [a, b]), got {}",
    "dict_type": "expected a mapping (indented 'key: value' lines), got {}",
    "model_type": "expected a mapping (indented 'key: value' lines), got {}",
    "model_attributes_type": "expected a mapping (indented 'key: value' lines), got {}",
}


def _type_reason(kind: str, value: Any, ctx: dict[str, Any]) -> str | None:
    """A value of the wrong type."""
    quoted = _quoted_reason(kind, value)
    if quoted is not None:
        return quoted
    if kind in _EXPECTED:
        return _EXPECTED[kind].format(describe(value))
    if kind == "literal_error":
        return f"must be {ctx['expected']} (got {describe(value)})"
    return None


_BOUNDS = {
    "greater_than_equal": "at least",
    "greater_than": "more than",
    "less_than_equal": "at most",
    "less_than": "less than",
}


def _limit_reason(kind: str, value: Any, ctx: dict[str, Any]) -> str | None:
    """A number out of range, or a list or text too short or long."""
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {next(iter(ctx.values()))} (got {value})"
    if kind == "too_short":
        if isinstance(value, str):
            return "must not be empty"
        return f"must have at least {ctx['min_length']} item{'s' if ctx['min_length'] != 1 else ''}"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    return None


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
