"""The agent at 50 / 200 / 500 series (`trafficd-dev bench-probe --series 50,200,500`): does it keep up, at what CPU.

The real `Agent` probes N series (N worker names, one model, all served by the benchmark worker process: true
TTFT `--ttft-ms`, then `--tokens` tokens `--token-ms` apart) every `--interval` (500 ms) for `--seconds`, once at
a fixed concurrency of 64 (the old default) and once with `probe.concurrency: auto` (at most
`--max-concurrency`, default the policy's 256), which sizes itself from the measured durations. For each run:
probes wanted (series × rounds), completed, skipped (%), probes/s, probes per CPU-second of the agent process
(its own CPU only; the worker is another process on the same cores), the slots at the end (and the most reached),
the agent's event-loop lag (median over the run of the 90th percentile of its last 2 s of ticks), and fidelity:
the measured TTFT p99 against the true one, and TTFT added over the truth at p50/p99 (and at p99 over the second
half of the run, once `auto` has settled).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import yaml

from trafficd.policy.schema import parse_policy
from trafficd.probe.agent import Agent


class _Sink:
    def __init__(self) -> None:
        self.samples: list[Any] = []
        self.rounds = 0

    async def write(self, samples: Any) -> None:
        self.samples.extend(samples)

    async def heartbeat(self, agent_id: str, region: str) -> None:
        self.rounds += 1


def _policy(url: str, series: int, interval_s: float, concurrency: int | str, ceiling: int) -> Any:
    doc = {
        "version": 1,
        "service": "bench",
        "models": [{"name": "m"}],
        "probe": {
            "interval": f"{int(interval_s * 1000)}ms",
            "concurrency": concurrency,
            "max_concurrency": ceiling,
            "targets": {"allow_loopback": True},
        },
        "regions": {
            "r1": {
                "workers": [{"name": f"w{i:04d}", "url": url} for i in range(series)],
                "dns": {"endpoint": "r1.lb.example.com", "aws_region": "us-east-1"},
            }
        },
        "dns": {"zone_id": "Z1", "record_name": "api.example.com."},
    }
    return parse_policy(yaml.safe_dump(doc), "bench-policy.yaml")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, round(q * len(s)) - 1))], 1)


async def run_one(url: str, series: int, concurrency: int | str, args: Any) -> dict[str, Any]:
    sink, stop = _Sink(), asyncio.Event()
    agent = Agent(_policy(url, series, args.interval, concurrency, args.max_concurrency), "r1", sink, agent_id="bench")
    cpu0, wall0, started_at = time.process_time(), time.perf_counter(), time.time()
    task = asyncio.create_task(agent.run(stop))
    most, lags = 0, []
    for _ in range(int(args.seconds * 10)):
        await asyncio.sleep(0.1)
        slot = agent._slot
        most = max(most, slot.sem.in_use if slot is not None else 0)
        lags.append(agent.stalls.lag_s() * 1000.0)
    final = agent._slot.sem.limit if agent._slot is not None else 0
    stop.set()
    await task
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ok = [s for s in sink.samples if s.ok and s.ttft_ms is not None]
    added = [s.ttft_ms - args.ttft_ms for s in ok]
    settled = [s.ttft_ms - args.ttft_ms for s in ok if s.t >= started_at + args.seconds / 2]
    done = len(sink.samples)
    wanted = series * sink.rounds
    return {
        "series": series,
        "concurrency": concurrency,
        "slots_at_end": final,
        "most_in_flight": most,
        "rounds": sink.rounds,
        "wanted": wanted,
        "completed": done,
        "failed": done - len(ok),
        "skipped": agent.skips.skipped_total,
        "skipped_pct": round(100.0 * agent.skips.skipped_total / wanted, 1) if wanted else 0.0,
        "probes_per_s": round(done / wall, 1),
        "probes_per_cpu_s": round(done / cpu, 1) if cpu > 0 else None,
        "agent_cpu_pct": round(100.0 * cpu / wall, 1),
        "loop_lag_ms": _pct(lags, 0.5),
        "true_ttft_ms": args.ttft_ms,
        "ttft_p99_ms": _pct([s.ttft_ms for s in ok], 0.99),
        "added_p50_ms": _pct(added, 0.5),
        "added_p99_ms": _pct(added, 0.99),
        "added_p99_2nd_half_ms": _pct(settled, 0.99),
    }


async def run_all(url: str, sizes: list[int], args: Any) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        for c in (64, "auto"):
            rows.append(await run_one(url, n, c, args))
    return rows


COLUMNS = (
    "series",
    "concurrency",
    "slots_at_end",
    "most_in_flight",
    "wanted",
    "completed",
    "skipped_pct",
    "probes_per_s",
    "probes_per_cpu_s",
    "agent_cpu_pct",
    "loop_lag_ms",
    "true_ttft_ms",
    "ttft_p99_ms",
    "added_p50_ms",
    "added_p99_ms",
    "added_p99_2nd_half_ms",
)


def report(rows: list[dict[str, Any]], machine: dict[str, Any], args: Any) -> str:
    head = (
        f"agent at scale: interval {args.interval:g} s, {args.seconds:g} s per run, worker TTFT {args.ttft_ms:g} ms "
        f"+ {args.tokens} × {args.token_ms:g} ms; machine {machine['nproc']} cores, load {machine['loadavg_1m']}"
    )
    lines = [head, "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)
