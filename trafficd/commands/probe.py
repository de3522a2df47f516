"""`trafficd probe URL --model M [--api API] [--count N] [--json]`: run probes by hand, as the agent does.

Prints one line per probe (with `--json`, one JSON object: ttft, total, max gap, tokens, ok, reason, the URL
requested, the server's message, …) and exits 1 when every probe failed, 0 otherwise, 78 when the settings are
unusable (policy, API key, CA file). Settings come from `--policy` (probe section, the deadlines and the model's
API/lengths/answer rules for `--region`) and are overridden by the flags. `--check-models` first asks the
worker's model list and says on stderr which models it does not list. The API key is only ever named
(`--api-key-env VAR`, `--api-key-file PATH`), never passed on the command line. A closed pipe
(`trafficd probe … | head -1`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from trafficd.cli import duration_arg
from trafficd.errors import EX_CONFIG
from trafficd.probe.apis import DIALECTS, dialect

if TYPE_CHECKING:
    from trafficd.policy.schema import Ask, Deadlines, Probe
    from trafficd.probe.prober import Prober, ProbeResult

# `probe --help` imports the dialect table only (its choices); the handler imports the policy schema (pydantic)
# and the prober (aiohttp).


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def result_dict(n: int, r: ProbeResult) -> dict[str, Any]:
    s = r.sample
    return {
        "n": n,
        "worker": s.worker,
        "model": s.model,
        "ok": s.ok,
        "reason": s.reason,
        "status": s.status,
        "ttft_ms": _r(s.ttft_ms),
        "total_ms": _r(s.total_ms),
        "max_gap_ms": _r(s.max_gap_ms),
        "connect_ms": _r(s.connect_ms),
        "tokens": s.tokens,
        "reasoning_tokens": s.reasoning_tokens,
        "url": r.url,
        "server_message": r.server_message,
        "detail": r.detail,
    }


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def result_line(n: int, r: ProbeResult) -> str:
    s = r.sample
    head = f"{n:>3} {s.model} {'ok  ' if s.ok else 'FAIL'} {s.reason or ''}".rstrip()
    body = (
        f"ttft {_ms(s.ttft_ms)}  total {_ms(s.total_ms)}  max gap {_ms(s.max_gap_ms)}  "
        f"tokens {s.tokens}  connect {_ms(s.connect_ms)}  status {s.status if s.status is not None else '-'}"
    )
    if s.reasoning_tokens:
        body += f"  reasoning {s.reasoning_tokens}"
    tail = f"  ({r.detail})" if r.detail else ""
    return f"{head}  {body}{tail}"


_ASK_FLAGS = ("api", "max_tokens", "prompt_tokens", "ttft_from")


def _settings(args: argparse.Namespace) -> tuple[Probe, dict[str, Deadlines], dict[str, Ask]]:
    """Probe settings, per-model deadlines and what to ask each model, from the policy (if any) and the flags."""
    from trafficd.policy.schema import REASONING_MAX_TOKENS, Ask, Probe, load_policy

    probe = Probe()
    per_model: dict[str, Deadlines] = {}
    asks: dict[str, Ask] = {}
    if args.policy:
        policy = load_policy(args.policy).policy
        probe = policy.probe
        region = args.region or (policy.region_names[0] if len(policy.region_names) == 1 else None)
        for m in args.model:
            per_model[m] = policy.deadlines_for(region, m) if region else probe.deadlines
            if region:
                asks[m] = policy.ask_for(region, m)
    update: dict[str, Any] = {}
    if args.api_key_env or args.api_key_file:
        update["auth"] = probe.auth.model_copy(
            update={"api_key_env": args.api_key_env, "api_key_file": args.api_key_file}
        )
    if args.ca_file or args.insecure:
        update["tls"] = probe.tls.model_copy(
            update={"ca_file": args.ca_file or probe.tls.ca_file, "verify": not args.insecure}
        )
    probe = probe.model_copy(update=update)
    flags = {k: getattr(args, k) for k in ("connect", "first_token", "gap", "total") if getattr(args, k)}
    deadlines = {m: per_model.get(m, probe.deadlines).model_copy(update=flags) for m in args.model}
    ask_flags: dict[str, Any] = {k: getattr(args, k) for k in _ASK_FLAGS if getattr(args, k) is not None}
    if args.allow_empty:
        ask_flags["allow_empty"] = True
    base = Ask.resolve(probe, None)
    if args.reasoning and args.max_tokens is None:
        ask_flags["max_tokens"] = max(base.max_tokens, REASONING_MAX_TOKENS)
    return probe, deadlines, {m: asks.get(m, base).model_copy(update=ask_flags) for m in args.model}


async def _check_models(prober: Prober, args: argparse.Namespace, asks: dict[str, Ask]) -> None:
    """Say on stderr which models the worker does not list (or that its list cannot be read)."""
    from trafficd.probe.models import list_models

    for model, ask in asks.items():
        found = await list_models(prober, args.url, args.address, ask.api)
        if found.models is None:
            print(f"trafficd probe: cannot read the model list ({found.error}) at {found.url}", file=sys.stderr)
        elif not dialect(ask.api).serves(found.models, model):
            listed = ", ".join(sorted(found.models)[:20]) or "none"
            print(f"trafficd probe: {found.url} does not list model {model!r} (it lists {listed})", file=sys.stderr)


async def run_probes(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio

    from trafficd.policy.schema import PolicyError
    from trafficd.probe.credentials import SecretError, load_api_key
    from trafficd.probe.prober import ProbeConfigError, Prober, Target

    try:
        cfg, deadlines, asks = _settings(args)
        secret = load_api_key(cfg.auth)
        prober = Prober(cfg, secret=secret)
    except (PolicyError, SecretError, ProbeConfigError) as exc:
        print(f"trafficd probe: {exc}", file=sys.stderr)
        return EX_CONFIG
    worker = args.worker or "manual"
    failures = total = 0
    async with prober:
        if args.check_models:
            await _check_models(prober, args, asks)
        for i in range(1, args.count + 1):
            for model in args.model:
                target = Target("manual", worker, model, args.url, args.address, deadlines[model], asks[model])
                r = await prober.probe_detailed(target)
                total += 1
                failures += not r.sample.ok
                print(json.dumps(result_dict(i, r)) if args.json else result_line(i, r), file=out, flush=True)
            if args.interval and i < args.count:
                await asyncio.sleep(args.interval)
    if not args.json:
        print(f"{total} probes: {total - failures} ok, {failures} failed", file=out)
    return 1 if failures == total else 0


def _command(args: argparse.Namespace) -> int:
    import asyncio

    try:
        return asyncio.run(run_probes(args, sys.stdout))
    except BrokenPipeError:  # the reader went away (`| head -1`): stop quietly, as `head` expects
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not complain again
        return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "probe",
        help="probe a worker by hand and print each probe's timings",
        description="Run streaming probes against URL (a worker's base URL, with or without /v1, or the API's "
        "full endpoint URL).",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("--model", action="append", required=True, help="model to ask (repeat for several)")
    p.add_argument("--count", type=int, default=1, help="probes per model (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per probe")
    p.add_argument("--interval", type=duration_arg, default=0.0, help="pause between probes, e.g. 1s")
    p.add_argument("--policy", help="take probe settings (auth, TLS, prompt, deadlines) from this policy")
    p.add_argument("--region", help="region whose deadlines apply (with --policy)")
    p.add_argument("--worker", help="worker name shown in the output")
    p.add_argument("--address", help="connect to this IP while TLS verifies the URL's host name")
    p.add_argument("--ca-file", help="CA bundle to verify the worker's certificate")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--api-key-env", help="name of the environment variable holding the API key")
    p.add_argument("--api-key-file", help="file holding the API key")
    p.add_argument("--api", choices=sorted(DIALECTS), help="the worker's streaming API (default openai-chat)")
    p.add_argument("--max-tokens", type=int, help="answer length (default 16)")
    p.add_argument("--reasoning", action="store_true", help="a reasoning model: max_tokens 1024 unless given")
    p.add_argument("--prompt-tokens", type=int, help="pad the prompt to about this many tokens")
    p.add_argument("--allow-empty", action="store_true", help="an answer without content is ok")
    p.add_argument("--ttft-from", choices=["answer", "reasoning"], help="TTFT ends at the first answer token (default)")
    p.add_argument("--check-models", action="store_true", help="first ask the worker's model list")
    for name in ("connect", "first-token", "gap", "total"):
        p.add_argument(f"--{name}", type=duration_arg, help=f"{name} deadline, e.g. 2s")
    p.set_defaults(func=_command)
