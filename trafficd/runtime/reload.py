"""The policy in force in a running daemon: reload on SIGHUP, keep the last good policy on error, exit 78 at start.

    loaded = load_or_exit(path)            # bad file at start: every problem on stderr, exit 78, nothing written
    holder = PolicyHolder(path, loaded)    # holder.current (LoadedPolicy), .policy, .hash
    install_sighup(loop, holder)           # or loop.add_signal_handler(signal.SIGHUP, holder.reload)

Daemons read `holder.current` at the start of each cycle (and log `holder.current.hash` with every decision), so
a reload takes effect at the next cycle; `on_change` callbacks run right after a reload that changed something.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from trafficd.errors import EX_CONFIG as EX_CONFIG
from trafficd.policy.schema import LoadedPolicy, Policy, PolicyError, PolicyProblem, load_policy
from trafficd.runtime import notify
from trafficd.runtime.logs import get_logger

RELOAD_TIMEOUT_S = 10.0  # a reload's reading and checking, on a worker thread; the loop never waits for it

Acceptor = Callable[[Policy], list[str]]  # reasons this daemon cannot run with a (valid) policy; [] = fine
Listener = Callable[[LoadedPolicy, LoadedPolicy], None]  # (old, new) after a reload that changed the policy


def problem_fields(problems: list[PolicyProblem] | tuple[PolicyProblem, ...]) -> list[dict[str, Any]]:
    """Problems as log fields: file, line, column, field, reason."""
    return [
        {"file": p.file, "line": p.line, "column": p.column, "field": p.field, "reason": p.reason} for p in problems
    ]


class PolicyHolder:
    """Holds the `LoadedPolicy` in force; `reload()` swaps it only for a valid (and accepted) one."""

    def __init__(self, path: str | Path, loaded: LoadedPolicy, *, accept: Acceptor | None = None) -> None:
        self.path = str(path)
        self._current = loaded
        self._accept = accept
        self._listeners: list[Listener] = []
        self.log = get_logger("policy", policy_file=self.path)
        self.reloads = 0  # successful reloads
        self.rejections = 0  # reloads refused (the last good policy stayed)
        self.last_reload_ok = True
        self.last_problems: list[PolicyProblem] = []  # why the last reload was rejected
        self._reading: asyncio.Future[LoadedPolicy] | None = None  # reload_async's worker thread

    @property
    def current(self) -> LoadedPolicy:
        return self._current

    @property
    def policy(self) -> Policy:
        return self._current.policy

    @property
    def hash(self) -> str:
        return self._current.hash

    def on_change(self, listener: Listener) -> None:
        """Call `listener(old, new)` after every reload that changed the effective policy."""
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Re-read the file. True when the new policy is in force; False when it was rejected (old one stays).

        Parses on the calling thread: a daemon's event loop uses `reload_async` (SIGHUP: `install_sighup`)."""
        try:
            new = self._read()
        except PolicyError as exc:
            return self._reject(exc)
        return self._apply(new)

    async def reload_async(self, timeout_s: float = RELOAD_TIMEOUT_S) -> bool:
        """`reload()` with the reading and validation on a worker thread, given at most `timeout_s`: the event
        loop (health checks, signal handlers, probes) keeps running however slow or hostile the file is."""
        if self._reading is not None and not self._reading.done():
            reason = "the previous reload is still being read; try again when it ends"
            return self._reject(PolicyError([PolicyProblem(self.path, "", reason)]))
        self._reading = asyncio.ensure_future(asyncio.to_thread(self._read))
        try:
            new = await asyncio.wait_for(asyncio.shield(self._reading), timeout_s)
        except TimeoutError:
            reason = f"reading and checking the file took longer than {timeout_s:g}s; the last good policy stays"
            return self._reject(PolicyError([PolicyProblem(self.path, "", reason)]))
        except PolicyError as exc:
            return self._reject(exc)
        return self._apply(new)

    def _read(self) -> LoadedPolicy:
        """Load, validate and accept the file (thread-safe: touches no state of the holder)."""
        new = load_policy(self.path)
        refused = self._accept(new.policy) if self._accept else []
        if refused:
            raise PolicyError([PolicyProblem(self.path, "", reason) for reason in refused])
        return new

    def _reject(self, exc: PolicyError) -> bool:
        self.rejections += 1
        self.last_reload_ok = False
        self.last_problems = list(exc.problems)
        self.log.error(
            "policy.reload_rejected",
            policy_hash=self._current.hash,
            problem_count=len(exc.problems),
            problems=problem_fields(exc.problems),
        )
        return False

    def _apply(self, new: LoadedPolicy) -> bool:
        old = self._current
        from trafficd.policy.diff import diff_policies

        changes = diff_policies(old.policy, new.policy)
        self._current = new
        self.reloads += 1
        self.last_reload_ok = True
        self.log.info(
            "policy.reloaded",
            old_hash=old.hash,
            new_hash=new.hash,
            file_sha256=new.sha256,
            changed=bool(changes),
            changes=changes,
            warnings=problem_fields(new.warnings),
        )
        if changes:
            for listener in self._listeners:
                try:
                    listener(old, new)
                except Exception as exc:  # a listener must not undo a good reload
                    self.log.error("policy.listener_failed", error=f"{type(exc).__name__}: {exc}")
        return True


async def reload_notifying(holder: PolicyHolder) -> bool:
    """`holder.reload_async()` told to systemd: RELOADING=1 with MONOTONIC_USEC first, then READY=1 with a STATUS
    naming the policy in force, or the rejected file and its first problem (`systemctl status` shows it)."""
    notify.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    ok = await holder.reload_async()
    notify.notify("READY=1", "STATUS=" + reload_status(holder, ok))
    return ok


def reload_status(holder: PolicyHolder, ok: bool) -> str:
    if ok:
        return f"policy {holder.hash} from {holder.path} in force (reload {holder.reloads})"
    n = len(holder.last_problems)
    first = f": {holder.last_problems[0]}" if holder.last_problems else ""
    return (
        f"reload REJECTED, {holder.path} has {n} problem{'s' if n != 1 else ''}{first}; "
        f"still running policy {holder.hash}"
    )[:400]


def install_sighup(loop: asyncio.AbstractEventLoop, holder: PolicyHolder) -> None:
    """SIGHUP → `reload_notifying(holder)` as a task: the file is read off the loop, so neither the loop nor the
    other signal handlers (SIGTERM) ever wait for it; systemd sees RELOADING=1 … READY=1 and the outcome."""
    tasks: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reload_notifying(holder))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)


def load_or_exit(path: str | Path, *, accept: Acceptor | None = None) -> LoadedPolicy:
    """The policy to start with. On any problem: print each to stderr and exit 78 (EX_CONFIG), having written
    nothing but those lines and one `policy.load_rejected` event (systemd does not restart on 78)."""
    log = get_logger("policy", policy_file=str(path))
    try:
        loaded = load_policy(path)
        refused = accept(loaded.policy) if accept else []
        if refused:
            raise PolicyError([PolicyProblem(str(path), "", reason) for reason in refused])
    except PolicyError as exc:
        _refuse(log, path, exc)
    # warnings go in the JSON event (a level above INFO when there are some), not as plain lines on stderr
    (log.warning if loaded.warnings else log.info)(
        "policy.loaded",
        policy_hash=loaded.hash,
        file_sha256=loaded.sha256,
        warnings=problem_fields(loaded.warnings),
    )
    return loaded


def _refuse(log: Any, path: str | Path, exc: PolicyError) -> NoReturn:
    """Every problem, then exit 78. A person starting the daemon by hand reads them as plain lines on stderr; under
    systemd (`JOURNAL_STREAM` set: stdout and stderr go to the journal) the one JSON event carries them all, so
    every line in the journal stays JSON."""
    n = len(exc.problems)
    if not os.environ.get("JOURNAL_STREAM"):
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}; not starting (exit {EX_CONFIG})", file=sys.stderr)
    log.error("policy.load_rejected", problem_count=n, problems=problem_fields(exc.problems))
    sys.exit(EX_CONFIG)
