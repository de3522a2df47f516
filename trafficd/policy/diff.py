"""What would change in behaviour between two policies (pure): `trafficd policy diff` and the reload log.

Compares the effective policies (defaults filled in), not the texts, so comments, layout and spelling out a
default change nothing. Lists of named things (workers, models) are matched by name; regions by key. A few
derived figures that no single field shows are added: the recovery thresholds, each region's models, and the
deadlines each region × model probe really uses after overrides.
"""

from __future__ import annotations

import json
from typing import Any

from trafficd.policy.schema import Policy, format_duration


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return json.dumps(value, separators=(", ", ": "))


def _given(value: Any) -> Any:
    """The parts of a value that say something: no nulls, no empty mappings."""
    if isinstance(value, dict):
        pruned = {k: _given(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v is not None and v != {}}
    return value


def _named(items: list[Any]) -> dict[str, Any] | None:
    """A list of mappings with unique 'name's, keyed by name; None when the list is not like that."""
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    keyed = {i["name"]: i for i in items}
    return keyed if len(keyed) == len(items) else None


def _walk(old: Any, new: Any, path: str, out: list[str]) -> None:
    """Append one line per difference between two JSON-like values (mappings by key, named lists by name)."""
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        _walk_mapping(old, new, path, out)
        return
    if isinstance(old, list) and isinstance(new, list):
        a, b = _named(old), _named(new)
        if a is not None and b is not None:
            _walk_named(a, b, path, out)
            return
    out.append(f"{path}: {_show(old)} → {_show(new)}")


def _walk_mapping(old: dict[str, Any], new: dict[str, Any], path: str, out: list[str]) -> None:
    """Keys removed, added (regions by name), or changed (recursively), in the old file's order."""
    for key in [*old, *(k for k in new if k not in old)]:
        if key not in new:
            out.append(f"{path}: removed {'region ' if path == 'regions' else ''}{key}")
        elif key not in old:
            added = (
                f"regions: added region {key}"
                if path == "regions"
                else f"{path}: added {key} {_show(_given(new[key]))}"
            )
            out.append(added)
        else:
            _walk(old[key], new[key], f"{path}.{key}" if path else str(key), out)


def _walk_named(a: dict[str, Any], b: dict[str, Any], path: str, out: list[str]) -> None:
    """Named lists (workers, models) matched by name: removed, added, changed, and a changed order."""
    out.extend(f"{path}: removed {name}" for name in a if name not in b)
    for name, item in b.items():
        if name in a:
            _walk(a[name], item, f"{path}[{name}]", out)
            continue
        given = _given({k: v for k, v in item.items() if k != "name"})
        out.append(f"{path}: added {name}" + (f" {_show(given)}" if given else ""))
    if [n for n in a if n in b] != [n for n in b if n in a]:
        out.append(f"{path}: order {_show(list(a))} → {_show(list(b))}")


def _derived(p: Policy) -> dict[str, str]:
    figures: dict[str, str] = {
        "recovery threshold (recover.below × slo.total_p99)": format_duration(p.slo.total_p99 * p.recover.below)
    }
    if p.slo.ttft_p99 is not None:
        figures["TTFT recovery threshold (recover.below × slo.ttft_p99)"] = format_duration(
            p.slo.ttft_p99 * p.recover.below
        )
    for region in p.regions:
        models = p.models_for(region)
        figures[f"models probed in {region}"] = ", ".join(m.name for m in models)
        for m in models:
            d = p.deadlines_for(region, m.name)
            figures[f"deadlines for {region} × {m.name}"] = " ".join(
                f"{k}={format_duration(getattr(d, k))}" for k in ("connect", "first_token", "gap", "total")
            )
    return figures


def diff_policies(old: Policy, new: Policy) -> list[str]:
    """One line per behaviour change, e.g. 'slo.total_p99: 3s → 2500ms'; [] when both behave the same."""
    out: list[str] = []
    _walk(old.model_dump(mode="json"), new.model_dump(mode="json"), "", out)
    before, after = _derived(old), _derived(new)
    for key, value in after.items():
        if key in before and before[key] != value:
            out.append(f"{key}: {before[key]} → {value}")
    return out
