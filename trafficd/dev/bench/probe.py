"""Probe fidelity benchmark: `python -m trafficd.dev.bench.probe [--quick] [--json]` (or `trafficd bench-probe`).

Starts a local worker in its own process (loopback, free port) whose first content token comes exactly
`--ttft-ms` (200) after the request and then `--tokens` tokens every `--token-ms` (20), and probes it with the
real `Prober` at concurrency 1, 16 and 64 (probes back to back in each slot, one shared connection pool, as the
agent does). For each concurrency it prints the measured TTFT p50/p99 minus the truth (the inflation the probe
and the machine add), the worker's own lateness (its timer overshoot, measured inside the worker; part of the
inflation that is not the probe's), the event-loop lag of client and worker (how late a 10 ms timer fires: CPU
contention on the machine), probes/s and client CPU per probe. Slots start spread over one probe's duration,
as the agent's jitter spreads probes (`--aligned` starts them together: the worst case).
Target: ≤ 30 ms added at p99 at the default concurrency (64). Exit 1 if a probe failed or measured below the truth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web

from trafficd.dev.services import LOOPBACK, free_port, stop_process, wait_for_port
from trafficd.policy.schema import Probe
from trafficd.probe.prober import Prober, Target

# ---------------------------------------------------------------- the worker (runs in its own process)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "b",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class LagMeter:
    """Event-loop lag: how late a 10 ms timer fires. It shows the delay the machine (CPU contention) adds."""

    def __init__(self) -> None:
        self.lag_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            self.lag_ms.append((loop.time() - t - 0.01) * 1000.0)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    def take(self) -> list[float]:
        out, self.lag_ms = self.lag_ms, []
        return out

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def worker_app(ttft_ms: float, token_ms: float, tokens: int) -> web.Application:
    late_ms: list[float] = []
    lag = LagMeter()

    async def completions(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_chunk({"role": "assistant"}))
        await asyncio.sleep(max(0.0, start + ttft_ms / 1000.0 - loop.time()))
        await resp.write(_chunk({"content": "t0 "}))
        late_ms.append((loop.time() - start) * 1000.0 - ttft_ms)
        for i in range(1, tokens):
            await asyncio.sleep(token_ms / 1000.0)
            await resp.write(_chunk({"content": f"t{i} "}))
        await resp.write(_chunk({}, "stop") + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def stats(_: web.Request) -> web.Response:
        out = list(late_ms)
        late_ms.clear()
        return web.json_response({"late_ms": out, "lag_ms": lag.take()})

    async def lifecycle(_: web.Application) -> Any:
        lag.start()
        yield
        await lag.stop()

    app = web.Application()
    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/stats", stats)
    return app


def serve(port: int, ttft_ms: float, token_ms: float, tokens: int) -> None:
    web.run_app(worker_app(ttft_ms, token_ms, tokens), host=LOOPBACK, port=port, print=None, access_log=None)


# ---------------------------------------------------------------- the client


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


async def measure(url: str, concurrency: int, probes: int, ttft_ms: float, stagger_s: float = 0.0) -> dict[str, Any]:
    """Probe with `concurrency` slots back to back; slot i starts i × stagger_s / concurrency late."""
    cfg = Probe.model_validate({"concurrency": concurrency})
    target = Target("bench", "w", "m", url)
    ttfts: list[float] = []
    failed = 0
    async with Prober(cfg) as prober:
        for _ in range(min(concurrency, 4)):  # warm the pool so connect time is not in the figures
            await prober.probe(target)
        async with aiohttp.ClientSession() as http:
            await http.get(url + "/stats")
            remaining = probes

            async def slot(i: int) -> None:
                nonlocal remaining, failed
                await asyncio.sleep(i * stagger_s / concurrency)
                while remaining > 0:
                    remaining -= 1
                    s = await prober.probe(target)
                    if s.ok and s.ttft_ms is not None:
                        ttfts.append(s.ttft_ms)
                    else:
                        failed += 1

            lag = LagMeter()
            lag.start()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(slot(i) for i in range(concurrency)))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            await lag.stop()
            worker = await (await http.get(url + "/stats")).json()
    added = [t - ttft_ms for t in ttfts]
    return {
        "concurrency": concurrency,
        "probes": probes,
        "failed": failed,
        "added_min_ms": round(min(added), 2),
        "added_p50_ms": round(pct(added, 0.50), 2),
        "added_p99_ms": round(pct(added, 0.99), 2),
        "added_max_ms": round(max(added), 2),
        "worker_late_p99_ms": round(pct(worker["late_ms"], 0.99), 2) if worker["late_ms"] else None,
        "client_lag_p99_ms": round(pct(lag.lag_ms, 0.99), 2) if lag.lag_ms else None,
        "worker_lag_p99_ms": round(pct(worker["lag_ms"], 0.99), 2) if worker["lag_ms"] else None,
        "probes_per_s": round(probes / wall, 1),
        "cpu_ms_per_probe": round(cpu * 1000.0 / probes, 3),
    }


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
    }


async def measure_all(url: str, plan: list[tuple[int, int]], ttft_ms: float, stagger_s: float) -> list[dict[str, Any]]:
    return [await measure(url, c, n, ttft_ms, stagger_s) for c, n in plan]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start the worker process, measure every concurrency (or, with --series, the agent), stop the worker."""
    port = free_port()
    cmd = [sys.executable, "-m", "trafficd.dev.bench.probe", "--serve", str(port), "--ttft-ms", str(args.ttft_ms)]
    cmd += ["--token-ms", str(args.token_ms), "--tokens", str(args.tokens)]
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
        plan = [(1, 8), (4, 16)] if args.quick else [(1, 40), (16, 320), (64, 768)]
        stagger_s = 0.0 if args.aligned else (args.ttft_ms + args.tokens * args.token_ms) / 1000.0
        if args.series:
            from trafficd.dev.bench import probe_series

            sizes = [int(x) for x in args.series.split(",")]
            return asyncio.run(probe_series.run_all(f"http://{LOOPBACK}:{port}", sizes, args))
        return asyncio.run(measure_all(f"http://{LOOPBACK}:{port}", plan, args.ttft_ms, stagger_s))
    finally:
        stop_process(proc)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"probe fidelity: worker TTFT {args.ttft_ms:g} ms, {args.tokens} tokens every {args.token_ms:g} ms",
        "machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()),
        f"slots {'aligned' if args.aligned else 'spread over one probe duration'}; figures in ms except probes/s",
        f"{'conc':>4} {'probes':>6} {'fail':>4} {'added p50':>9} {'added p99':>9} {'max':>7} {'wkr late p99':>12} "
        f"{'client lag p99':>14} {'wkr lag p99':>11} {'probes/s':>8} {'CPU/probe':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r['concurrency']:>4} {r['probes']:>6} {r['failed']:>4} {r['added_p50_ms']:>9.2f} "
            f"{r['added_p99_ms']:>9.2f} {r['added_max_ms']:>7.1f} {_f(r['worker_late_p99_ms']):>12} "
            f"{_f(r['client_lag_p99_ms']):>14} {_f(r['worker_lag_p99_ms']):>11} {r['probes_per_s']:>8.1f} "
            f"{r['cpu_ms_per_probe']:>9.3f}"
        )
    return "\n".join(lines)


def _parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--quick", action="store_true", help="a few probes at concurrency 1 and 4 (smoke test)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument(
        "--aligned", action="store_true", help="start all slots at once (worst case) instead of spreading them"
    )
    p.add_argument("--ttft-ms", type=float, default=200.0)
    p.add_argument("--token-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--series", default=None, help="run the real agent at these series counts, e.g. 50,200,500")
    p.add_argument("--interval", type=float, default=0.5, help="--series: the probe interval in seconds (0.5)")
    p.add_argument("--seconds", type=float, default=8.0, help="--series: how long each run lasts (8)")
    p.add_argument(
        "--max-concurrency", type=int, default=256, help="--series: probe.max_concurrency of the auto runs (256)"
    )
    return p


def _command(args: argparse.Namespace) -> int:
    if args.serve:
        serve(args.serve, args.ttft_ms, args.token_ms, args.tokens)
        return 0
    rows = run(args)
    if args.series:
        from trafficd.dev.bench import probe_series

        text = probe_series.report(rows, machine(), args)
        print(json.dumps({"machine": machine(), "results": rows}, indent=2) if args.json else text)
        return 0
    print(json.dumps({"machine": machine(), "results": rows}, indent=2) if args.json else report(rows, args))
    return 0 if all(r["failed"] == 0 and r["added_min_ms"] >= 0.0 for r in rows) else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _parser(sub.add_parser("bench-probe", help="measure how much TTFT the probe adds (fidelity benchmark)"))
    p.set_defaults(func=_command)


if __name__ == "__main__":
    sys.exit(_command(_parser(argparse.ArgumentParser(prog="python -m trafficd.dev.bench.probe")).parse_args()))
