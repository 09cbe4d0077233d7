"""A local Valkey cluster from the bundled binary, for tests and benchmarks.

:class:`LocalCluster` forms a cluster from the bundled ``valkey-server``
(masters, optional replicas, loopback ports) with ``CLUSTER MEET``,
``ADDSLOTSRANGE`` and ``REPLICATE`` — no ``valkey-cli`` needed. It is not
part of the serving path: nothing under ``chatlog`` imports it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis import exceptions as rexc
from redis.crc import key_slot

from chatlog.errors import EmbeddedServerError
from chatlog.eventstore.embedded import EmbeddedValkey, free_port

SLOTS = 16384


class LocalCluster:
    """A Valkey cluster of ``masters`` masters (and replicas) on loopback ports.

    Each node has its own directory under ``base_dir`` and is started from the
    bundled binary; :meth:`stop` stops them by pid. ``node_timeout`` (ms) is
    how long a silent master may be before its replica is promoted.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout: int = 5000,
        fsync: str = "always",
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs one master or more and 0+ replicas per master")
        self.base_dir = Path(base_dir)
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout = node_timeout
        self.fsync = fsync
        self.nodes: list[EmbeddedValkey] = []
        self.ids: dict[int, str] = {}  # port -> node id
        self.bus_ports: dict[int, int] = {}  # port -> cluster bus port

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every live node as a seed."""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes if n.process is not None)
        return f"redis+cluster://{seeds}"

    def client(self, node: EmbeddedValkey) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=int(node.port or 0), socket_timeout=5.0,
                           decode_responses=True)

    def command(self, node: EmbeddedValkey, *args: Any) -> Any:
        """Run one command on ``node`` (a fresh connection; for setup and tests)."""
        with self.client(node) as r:
            return r.execute_command(*args)

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start the nodes, join them, assign slots, attach replicas; wait for ``ok``."""
        total = self.n_masters * (1 + self.n_replicas)
        try:
            for i in range(total):
                self.nodes.append(self._start_node(i))
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, i: int) -> EmbeddedValkey:
        bus = free_port()
        node = EmbeddedValkey(
            self.base_dir / f"n{i}",
            port=0,
            fsync=self.fsync,
            extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus),
                "--cluster-node-timeout", str(self.node_timeout),
                "--cluster-require-full-coverage", "yes",
                "--cluster-replica-validity-factor", "0",  # a replica may always take over
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
            ],
        )
        node.start()
        self.bus_ports[int(node.port or 0)] = bus
        return node

    def _form(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        masters = self.nodes[: self.n_masters]
        for i, node in enumerate(self.nodes):
            self.ids[int(node.port or 0)] = self.command(node, "CLUSTER", "MYID")
            with contextlib.suppress(rexc.ResponseError):
                self.command(node, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            port = int(node.port or 0)
            self.command(first, "CLUSTER", "MEET", "127.0.0.1", port, self.bus_ports[port])
        per = SLOTS // self.n_masters
        for i, node in enumerate(masters):
            lo = i * per
            hi = SLOTS - 1 if i == self.n_masters - 1 else lo + per - 1
            self.command(node, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
        self._wait(deadline, self._all_known, "every node to know every other")
        for j, node in enumerate(self.nodes[self.n_masters:]):
            master = masters[j % self.n_masters]
            self.command(node, "CLUSTER", "REPLICATE", self.ids[int(master.port or 0)])
        self.wait_ok(max(deadline - time.monotonic(), 1.0))

    def _all_known(self) -> bool:
        want = len(self.nodes)
        for node in self.nodes:
            lines = str(self.command(node, "CLUSTER", "NODES")).strip().splitlines()
            if len(lines) != want or any("handshake" in ln or "noaddr" in ln for ln in lines):
                return False
        return True

    def _wait(self, deadline: float, check: Callable[[], bool], what: str) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(rexc.RedisError, OSError):
                if check():
                    return
            time.sleep(0.05)
        raise EmbeddedServerError(f"local cluster: timed out waiting for {what}")

    def live(self) -> list[EmbeddedValkey]:
        return [n for n in self.nodes if n.process is not None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + timeout

        def ok() -> bool:
            masters_seen = set()
            for node in self.live():
                info = str(self.command(node, "CLUSTER", "INFO"))
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
                masters_seen.add(frozenset(self._masters_by(node)))
                role = self.command(node, "ROLE")
                if role[0] in ("slave", "replica") and role[3] != "connected":
                    return False
            return len(masters_seen) == 1

        self._wait(deadline, ok, "cluster_state:ok on every node")

    def _masters_by(self, node: EmbeddedValkey) -> list[str]:
        """The ids of the masters holding slots, as ``node`` sees them."""
        out = []
        for line in str(self.command(node, "CLUSTER", "NODES")).strip().splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2] and len(parts) > 8:
                out.append(parts[0])
        return out

    def node_at(self, port: int) -> EmbeddedValkey:
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> EmbeddedValkey:
        """The live master that serves ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.live():
            with contextlib.suppress(rexc.RedisError, OSError):
                for lo, hi, primary, *_ in self.command(node, "CLUSTER", "SLOTS"):
                    if lo <= slot <= hi:
                        owner = self.node_at(int(primary[1]))
                        if owner.process is not None and self.command(owner, "ROLE")[0] == "master":
                            return owner
        raise EmbeddedServerError(f"no live master serves {key!r}")

    def replicas_of(self, master: EmbeddedValkey) -> list[EmbeddedValkey]:
        """The live nodes replicating ``master``."""
        out = []
        for node in self.live():
            role = self.command(node, "ROLE")
            if role[0] in ("slave", "replica") and int(role[2]) == master.port:
                out.append(node)
        return out

    def stop(self) -> None:
        """Stop every node (by its own pid)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
