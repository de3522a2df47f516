"""`trafficd probe URL --model M [--count N] [--json]`: run probes by hand, as the agent does, for on-call.

Prints one line per probe (with `--json`, one JSON object: ttft, total, max gap, tokens, ok, reason, …) and exits
1 when every probe failed, 0 otherwise, 78 when the settings are unusable (policy, API key, CA file). Settings
come from `--policy` (probe section, and the deadlines of `--region`/model) and are overridden by the flags. The
API key is only ever named (`--api-key-env VAR`, `--api-key-file PATH`), never passed on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from trafficd.policy.schema import Deadlines, PolicyError, Probe, load_policy, parse_duration
from trafficd.probe.credentials import SecretError, load_api_key
from trafficd.probe.prober import ProbeConfigError, Prober, ProbeResult, Target
from trafficd.runtime.reload import EX_CONFIG


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
    tail = f"  ({r.detail})" if r.detail else ""
    return f"{head}  {body}{tail}"


def _settings(args: argparse.Namespace) -> tuple[Probe, dict[str, Deadlines]]:
    """Probe settings and per-model deadlines from the policy (if any) and the flags."""
    probe = Probe()
    per_model: dict[str, Deadlines] = {}
    if args.policy:
        policy = load_policy(args.policy).policy
        probe = policy.probe
        region = args.region or (policy.region_names[0] if len(policy.region_names) == 1 else None)
        for m in args.model:
            per_model[m] = policy.deadlines_for(region, m) if region else probe.deadlines
    update: dict[str, Any] = {}
    if args.api_key_env or args.api_key_file:
        update["auth"] = probe.auth.model_copy(
            update={"api_key_env": args.api_key_env, "api_key_file": args.api_key_file}
        )
    if args.ca_file or args.insecure:
        update["tls"] = probe.tls.model_copy(
            update={"ca_file": args.ca_file or probe.tls.ca_file, "verify": not args.insecure}
        )
    if args.max_tokens is not None:
        update["max_tokens"] = args.max_tokens
    probe = probe.model_copy(update=update)
    flags = {k: getattr(args, k) for k in ("connect", "first_token", "gap", "total") if getattr(args, k)}
    deadlines = {m: per_model.get(m, probe.deadlines).model_copy(update=flags) for m in args.model}
    return probe, deadlines


async def run_probes(args: argparse.Namespace, out: TextIO) -> int:
    try:
        cfg, deadlines = _settings(args)
        secret = load_api_key(cfg.auth)
        prober = Prober(cfg, secret=secret)
    except (PolicyError, SecretError, ProbeConfigError) as exc:
        print(f"trafficd probe: {exc}", file=sys.stderr)
        return EX_CONFIG
    worker = args.worker or "manual"
    failures = total = 0
    async with prober:
        for i in range(1, args.count + 1):
            for model in args.model:
                target = Target("manual", worker, model, args.url, args.address, deadlines[model])
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
    return asyncio.run(run_probes(args, sys.stdout))


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "probe",
        help="probe a worker by hand and print each probe's timings",
        description="Run streaming probes against URL (a worker's base URL or its /v1/chat/completions URL).",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("--model", action="append", required=True, help="model to ask (repeat for several)")
    p.add_argument("--count", type=int, default=1, help="probes per model (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per probe")
    p.add_argument("--interval", type=_duration, default=0.0, help="pause between probes, e.g. 1s")
    p.add_argument("--policy", help="take probe settings (auth, TLS, prompt, deadlines) from this policy")
    p.add_argument("--region", help="region whose deadlines apply (with --policy)")
    p.add_argument("--worker", help="worker name shown in the output")
    p.add_argument("--address", help="connect to this IP while TLS verifies the URL's host name")
    p.add_argument("--ca-file", help="CA bundle to verify the worker's certificate")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--api-key-env", help="name of the environment variable holding the API key")
    p.add_argument("--api-key-file", help="file holding the API key")
    p.add_argument("--max-tokens", type=int)
    for name in ("connect", "first-token", "gap", "total"):
        p.add_argument(f"--{name}", type=_duration, help=f"{name} deadline, e.g. 2s")
    p.set_defaults(func=_command)
