"""Real Redis Cluster (three primaries, three replicas) and Sentinel (a primary, a replica, three sentinels) on free
loopback ports, started with redis-server and `redis-cli --cluster create`, for the tests (never anything but
loopback). Each is one module-scoped fixture's worth of processes; `stop()` ends them and removes their files."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from trafficd.dev.services import LOOPBACK, free_port, redis_server_binary, stop_process, wait_for_port


def _cli(*args: str, timeout_s: float = 30.0) -> str:
    out = subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    return out.stdout + out.stderr


def _wait(cond: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} after {timeout_s}s")


@dataclass
class Processes:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="trafficd-topology-")))
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, port: int, *extra: str, conf: str | None = None) -> None:
        d = self.workdir / str(port)
        d.mkdir(exist_ok=True)
        args = [redis_server_binary()]
        if conf is not None:
            path = d / "node.conf"
            path.write_text(conf)
            args.append(str(path))
        args += ["--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no", "--dir", str(d), *extra]
        self.procs[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_for_port(port, proc=self.procs[port])

    def kill(self, port: int) -> None:
        stop_process(self.procs.pop(port))

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Cluster(Processes):
    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{p}" for p in self.ports[:3])

    def start(self) -> Cluster:
        self.ports = [free_port() for _ in range(6)]
        for p in self.ports:
            bus = str(free_port())  # the default bus port (port + 10000) may not exist for a high free port
            self.spawn(
                p,
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                bus,
                "--cluster-config-file",
                f"nodes-{p}.conf",
            )
        out = _cli(
            "--cluster", "create", *(f"{LOOPBACK}:{p}" for p in self.ports), "--cluster-replicas", "1", "--cluster-yes"
        )
        if "[OK] All 16384 slots covered" not in out:
            raise RuntimeError(f"redis-cli --cluster create failed: {out[-500:]}")
        _wait(
            lambda: all("cluster_state:ok" in _cli("-p", str(p), "cluster", "info") for p in self.ports),
            "cluster not ok",
        )
        return self

    def primary_of(self, key: str) -> int:
        """The port of the primary serving `key` now."""
        alive = next(p for p in self.ports if p in self.procs)
        slot = int(_cli("-p", str(alive), "cluster", "keyslot", key).strip())
        for line in _cli("-p", str(alive), "cluster", "nodes").splitlines():
            f = line.split()
            if "master" in f[2] and "fail" not in f[2]:
                for r in f[8:]:
                    lo, _, hi = r.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        return int(f[1].split("@")[0].rpartition(":")[2])
        raise RuntimeError(f"no primary serves slot {slot}")


@dataclass
class SentinelSet(Processes):
    primary: int = 0
    replica: int = 0
    sentinels: list[int] = field(default_factory=list)
    name: str = "trafficd"

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"{LOOPBACK}:{p}" for p in self.sentinels) + f"/{self.name}/0"

    def start(self) -> SentinelSet:
        self.primary, self.replica = free_port(), free_port()
        self.spawn(self.primary)
        self.spawn(self.replica, "--replicaof", LOOPBACK, str(self.primary))
        self.sentinels = [free_port() for _ in range(3)]
        conf = (
            f"sentinel monitor {self.name} {LOOPBACK} {self.primary} 2\n"
            f"sentinel down-after-milliseconds {self.name} 1000\n"
            f"sentinel failover-timeout {self.name} 5000\n"
            f"sentinel parallel-syncs {self.name} 1\n"
        )
        for p in self.sentinels:
            self.spawn(p, "--sentinel", conf=conf)
        # ready for a failover: every Sentinel sees the replica and the other two (a quorum that has not met
        # cannot elect a leader), and the replica's link to the primary is up (a replica that never synced is
        # not promoted) — the CI run saw a failover never happen when only Sentinel 0 was asked
        _wait(
            lambda: (
                all(
                    "slaves=1" in (info := _cli("-p", str(p), "info", "sentinel")) and "sentinels=3" in info
                    for p in self.sentinels
                )
                and "master_link_status:up" in _cli("-p", str(self.replica), "info", "replication")
            ),
            "sentinels not ready",
        )
        return self

    def current_primary(self) -> int:
        out = _cli("-p", str(self.sentinels[0]), "sentinel", "get-master-addr-by-name", self.name).split()
        return int(out[1])
