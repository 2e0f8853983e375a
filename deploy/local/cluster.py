"""The clustered local stack: a 3-node Kafka KRaft cluster, Redis (AOF) and a 3-node Ray cluster
(a head plus two workers, each started with ``ray start`` as on separate hosts), on loopback ports
of their own, beside the single-node stack (deploy/local/stack.py) and never touching it.

``grdline stack up --cluster [--model DIR]`` / ``down --cluster`` / ``status --cluster``; the
integration drill (tests/integration/deploy) drives it from Python. ``python deploy/local/cluster.py
topics --bootstrap H:P,...`` creates the project topics with replication 3 on any cluster (compose).

* **Kafka**: nodes 1..3, each broker + controller (``controller.quorum.voters`` of all three), jars
  from the single-node stack's Maven cache, small heaps (``KAFKA_HEAP``). Every project topic has
  replication factor 3; ``min.insync.replicas`` 2 is the brokers' default, so with producers on
  ``acks=all`` (ingest's FramePublisher, the ingress' reject/DLQ producer) a write survives the
  loss of any one broker and is refused, not lost, when two are down.
* **Ray**: the head has 1 CPU and the marker resource ``grdline_head`` (GCS, dashboard with Serve's
  REST API, Serve controller); each worker has ``WORKER_CPUS`` CPUs and the custom resources
  ``grdline_model: 1`` and ``grdline_ingress: 1``. The derived Serve config (:func:`serve_config`)
  makes every GRDNetModel replica ask for ``grdline_model: 1`` and every LineIngress replica for
  ``grdline_ingress: 1`` (plus ``max_replicas_per_node: 1``), so each worker node carries exactly
  one replica of each and the head none: that is how the replicas spread across nodes. A lost
  worker's replicas stay pending until a node with those resources joins again.
* **Serve**: deployed with Ray's own client, ``serve deploy`` against the head's dashboard
  (:func:`deploy_serve`), from a config derived from ``deploy/serve/grdline.yaml``.
* **Only the line decides**: the brokers' client listener takes SASL/SCRAM-SHA-512 only, the
  StandardAuthorizer denies what :mod:`ingest.acl` does not grant (cameras write frames only, the
  ingress reads frames and writes verdicts and dead letters, the station reads verdicts); the
  controller listener takes SASL/PLAIN (KRaft controllers do not take SCRAM) from one controller
  user. Redis has ``requirepass``; Ray has token auth. Every password is derived from ONE secret
  (:meth:`Cluster.secret`: ``GRDLINE_CLUSTER_SECRET``, else a 0600 file made once in the state
  folder) and written only to 0600 files there — never to a command line the broker keeps, never
  to a log. Clients get their settings from :meth:`Cluster.kafka_settings` (per principal).

State (configs, data, logs, PIDs) lives under ``var/cluster/`` (``GRDLINE_CLUSTER_DIR``); Ray's
session files under a short ``/tmp/grdc-*`` folder (unix socket paths are limited), which also
keeps ``ray.init()`` elsewhere on the machine from finding this cluster. ``down`` stops only
processes of this cluster: by PID file (Kafka, Redis) and by Ray processes whose command line names
this cluster's Ray folder or GCS port; ``ray stop`` is never used (it would stop every Ray here).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # run as a script (compose `topics` service): import the packages
    sys.path.insert(0, str(REPO))

from inference.redis_memory import memory_config  # noqa: E402
from inference.stack_cli import load_stack  # noqa: E402
from ingest import acl  # noqa: E402

HOST = "127.0.0.1"
SERVE_CONFIG = REPO / "deploy" / "serve" / "grdline.yaml"

# ----------------------------------------------------------------------------- ports (one home)
BROKERS = (1, 2, 3)
KAFKA_PORTS = {1: 29092, 2: 29093, 3: 29094}
KAFKA_CONTROLLER_PORTS = {1: 29192, 2: 29193, 3: 29194}
REDIS_PORT = 26379
RAY_GCS_PORT = 26380
RAY_DASHBOARD_PORT = 28265
RAY_CLIENT_PORT = 26381
#: Ray nodes: "head", "w1", "w2"; each gets a block of 10 ports from here plus worker ports.
RAY_NODES = ("head", "w1", "w2")
_RAY_PORT_BASE = {"head": 26400, "w1": 26410, "w2": 26420}
_RAY_WORKER_PORTS = {"head": (27000, 27099), "w1": (27100, 27199), "w2": (27200, 27299)}
RAY_METRICS_PORTS = {"head": 28080, "w1": 28081, "w2": 28082}

REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
KAFKA_HEAP = ("-Xms128m", "-Xmx256m")
WORKER_CPUS = 2
MODEL_RESOURCE = "grdline_model"
#: The KRaft controllers' SASL/PLAIN user (controller listener), a super user like acl.ADMIN.
CONTROLLER_USER = "grdline-controller"
#: Environment variable with the one secret every password of this cluster is derived from.
SECRET_ENV = "GRDLINE_CLUSTER_SECRET"
INGRESS_RESOURCE = "grdline_ingress"


class ClusterError(RuntimeError):
    """A cluster process could not be started, checked or stopped; the message says which."""


def bootstrap_servers() -> str:
    return ",".join(f"{HOST}:{KAFKA_PORTS[n]}" for n in BROKERS)


@dataclass(frozen=True)
class Cluster:
    """One clustered local stack rooted at ``state`` (the drill uses a fresh folder per run)."""

    state: Path

    # ------------------------------------------------------------------------- paths, helpers
    @property
    def ray_temp(self) -> Path:
        return Path("/tmp") / f"grdc-{hashlib.sha1(str(self.state).encode()).hexdigest()[:8]}"

    def _pid_file(self, name: str) -> Path:
        return self.state / "pids" / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        stack = load_stack()
        try:
            pid = int(self._pid_file(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if stack._alive(pid) else None

    def _spawn(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, **(env or {})})
        self._pid_file(name).write_text(str(proc.pid))
        return proc.pid

    def _stop_pid(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
        stack = load_stack()
        pid = self.pid(name)
        self._pid_file(name).unlink(missing_ok=True)
        if pid is None:
            return False
        _kill_wait([pid], sig, timeout, alive=stack._alive, group=True)
        return True

    # ------------------------------------------------------------------------- secrets
    def secret(self) -> str:
        """The one secret of this cluster: ``GRDLINE_CLUSTER_SECRET``, else a random one kept in a
        0600 file of the state folder (made on first use)."""
        env = os.environ.get(SECRET_ENV)
        if env:
            return env
        path = self.state / "secret"
        if not path.exists():
            import secrets

            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path.read_text().strip()
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip()

    def password(self, user: str) -> str:
        """``user``'s password (a Kafka principal, the controller user or ``redis``): an HMAC of
        the name under the one secret, so nothing but the secret needs keeping."""
        import hmac

        return hmac.new(self.secret().encode(), user.encode(), hashlib.sha256).hexdigest()

    def kafka_settings(self, principal: str | None = acl.ADMIN) -> Any:
        """Client settings of ``principal`` (``None``: no credentials at all, as an outsider)."""
        from pydantic import SecretStr

        from ingest.settings import KafkaSettings

        if principal is None:
            return KafkaSettings(bootstrap_servers=bootstrap_servers())
        return KafkaSettings(bootstrap_servers=bootstrap_servers(), security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism=acl.SASL_MECHANISM, sasl_username=principal,
                             sasl_password=SecretStr(self.password(principal)))

    def admin_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments of the admin principal (a super user)."""
        return self.kafka_settings(acl.ADMIN).client_kwargs()

    def _auth_props(self) -> dict[str, str]:
        """Broker settings for SASL and ACLs (server.properties is written 0600)."""
        admin, ctl = acl.ADMIN, CONTROLLER_USER
        scram = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                 f'username="{admin}" password="{self.password(admin)}";')
        plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                 f'username="{ctl}" password="{self.password(ctl)}" user_{ctl}="{self.password(ctl)}";')
        return {
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": acl.SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": acl.SASL_MECHANISM,
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": acl.SASL_MECHANISM,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": scram,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{admin};User:{ctl}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def apply_acls(self) -> int:
        """The ACLs of :mod:`ingest.acl` on this cluster (as the admin principal; idempotent)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(**self.admin_kwargs(), request_timeout_ms=30_000)
        try:
            return acl.apply_acls(admin)
        finally:
            admin.close()

    # ------------------------------------------------------------------------- kafka
    def kafka_config(self, node: int) -> str:
        """The single-node stack's broker settings, made one voter of three with replication 3."""
        stack = load_stack()
        home = self.state / f"kafka-{node}"
        props = dict(line.split("=", 1) for line in stack._kafka_config(home / "data").splitlines()
                     if line and not line.startswith("#"))
        voters = ",".join(f"{n}@{HOST}:{KAFKA_CONTROLLER_PORTS[n]}" for n in BROKERS)
        props.update({
            "node.id": str(node),
            "controller.quorum.voters": voters,
            "listeners": f"SASL_PLAINTEXT://{HOST}:{KAFKA_PORTS[node]},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORTS[node]}",
            "advertised.listeners": f"SASL_PLAINTEXT://{HOST}:{KAFKA_PORTS[node]}",
            **self._auth_props(),
            "default.replication.factor": str(REPLICATION_FACTOR),
            "min.insync.replicas": str(MIN_INSYNC_REPLICAS),
            "offsets.topic.replication.factor": str(REPLICATION_FACTOR),
            "transaction.state.log.replication.factor": str(REPLICATION_FACTOR),
            "transaction.state.log.min.isr": str(MIN_INSYNC_REPLICAS),
            "share.coordinator.state.topic.replication.factor": str(REPLICATION_FACTOR),
            "share.coordinator.state.topic.min.isr": str(MIN_INSYNC_REPLICAS),
            # A killed broker is fenced after this long without heartbeats; its partitions' leaders move.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            "num.io.threads": "2",
            "num.network.threads": "2",
            "num.replica.fetchers": "1",
            "background.threads": "2",
        })
        return "\n".join(f"{k}={v}" for k, v in props.items()) + "\n"

    def _jvm(self, node: int) -> list[str]:
        stack = load_stack()
        java = stack._require("java", "install Java 17 (Debian package 'openjdk-17-jre-headless')")
        home = self.state / f"kafka-{node}"
        log4j = home / "log4j2.yaml"
        return [java, *KAFKA_HEAP, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{stack.kafka_lib_dir()}/*"]

    def format_kafka(self) -> None:
        """Write every node's config and format its storage with one cluster id (in parallel)."""
        stack = load_stack()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        procs = []
        for node in BROKERS:
            home = self.state / f"kafka-{node}"
            home.mkdir(parents=True, exist_ok=True)
            _write_private(home / "server.properties", self.kafka_config(node))
            (home / "log4j2.yaml").write_text(stack._LOG4J2)
            if (home / "data" / "meta.properties").exists():
                continue
            # every principal's SCRAM credentials go into the metadata log at format time (the
            # brokers need the admin's to replicate at all); the short-lived format process is the
            # only one that sees them on its command line, and its output is not kept
            scram = [a for p in acl.principals()
                     for a in ("--add-scram", f"{acl.SASL_MECHANISM}=[name={p.name},password={self.password(p.name)}]")]
            procs.append((node, subprocess.Popen(
                [*self._jvm(node), "kafka.tools.StorageTool", "format", "-t", cluster_id,
                 "-c", str(home / "server.properties"), *scram],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        for node, p in procs:
            out, _ = p.communicate(timeout=180)
            if p.returncode != 0:
                raise ClusterError(f"kafka-{node}: storage format failed:\n{_redact(out, self)}")

    def start_broker(self, node: int) -> None:
        if self.pid(f"kafka-{node}") is not None:
            return
        stack = load_stack()
        for port in (KAFKA_PORTS[node], KAFKA_CONTROLLER_PORTS[node]):
            stack._check_port_free(f"kafka-{node}", port)
        home = self.state / f"kafka-{node}"
        self._spawn(f"kafka-{node}", [*self._jvm(node), "kafka.Kafka", str(home / "server.properties")],
                    home / "server.log")

    def kill_broker(self, node: int) -> None:
        """SIGKILL one broker (a crashed host: no controlled shutdown, no leader hand-off)."""
        if not self._stop_pid(f"kafka-{node}", signal.SIGKILL):
            raise ClusterError(f"kafka-{node} is not running")

    def brokers_up(self, expected: int = len(BROKERS)) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(**{**self.admin_kwargs(), "client_id": "grdline-cluster-health"},
                                     request_timeout_ms=3000)
        except (KafkaError, OSError, ValueError):
            return False
        try:
            return len(admin.describe_cluster()["brokers"]) >= expected
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def leaders(self, topic: str) -> dict[int, int]:
        """``{partition: leader node id}`` of ``topic`` (-1 while a partition has no leader)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(**self.admin_kwargs(), request_timeout_ms=5000)
        try:
            (desc,) = admin.describe_topics([topic])
            return {p["partition_index"]: p["leader_id"] for p in desc["partitions"]}
        finally:
            admin.close()

    def in_sync(self, topic: str) -> dict[int, list[int]]:
        """``{partition: in-sync replica node ids}`` of ``topic``."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(**self.admin_kwargs(), request_timeout_ms=5000)
        try:
            (desc,) = admin.describe_topics([topic])
            return {p["partition_index"]: sorted(p["isr_nodes"]) for p in desc["partitions"]}
        finally:
            admin.close()

    def topic_config(self, topic: str) -> dict[str, str]:
        """Effective configs of ``topic`` (topic overrides and broker defaults)."""
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType

        from ingest.admin import _topic_configs

        admin = KafkaAdminClient(**self.admin_kwargs(), request_timeout_ms=5000)
        try:
            response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            return _topic_configs(response).get(topic, {})
        finally:
            admin.close()

    # ------------------------------------------------------------------------- redis
    def start_redis(self) -> None:
        stack = load_stack()
        if self.pid("redis") is not None:
            return
        server = stack._require("redis-server", "install Debian package 'redis-server'")
        stack._check_port_free("redis", REDIS_PORT)
        home = self.state / "redis"
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "redis.conf"
        _write_private(conf, "\n".join([f"bind {HOST}", f"port {REDIS_PORT}", 'save ""', "appendonly yes",
                                        "appendfsync everysec", *memory_config(), f"dir {home}",
                                        "daemonize no", "protected-mode yes",
                                        f"requirepass {self.password('redis')}"]) + "\n")
        self._spawn("redis", [server, str(conf)], home / "redis.log")

    def redis_client(self, **kw: Any) -> Any:
        """A redis-py client of this cluster's Redis, with its password."""
        import redis

        return redis.Redis(host=HOST, port=REDIS_PORT, password=self.password("redis"), **kw)

    def redis_up(self) -> bool:
        import redis

        try:
            return bool(self.redis_client(socket_timeout=2).ping())
        except redis.RedisError:
            return False

    # ------------------------------------------------------------------------- ray
    def ray_env(self) -> dict[str, str]:
        """The environment of every Ray node; replicas inherit it (as hosts' env on a real cluster)."""
        return {
            "GRDLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers(),
            "GRDLINE_REDIS_HOST": HOST,
            "GRDLINE_REDIS_PORT": str(REDIS_PORT),
            "GRDLINE_REDIS_PASSWORD": self.password("redis"),
            # the replicas (ingress, model) are the Kafka principal grdline-ingress
            "GRDLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "GRDLINE_KAFKA_SASL_MECHANISM": acl.SASL_MECHANISM,
            "GRDLINE_KAFKA_SASL_USERNAME": acl.INGRESS,
            "GRDLINE_KAFKA_SASL_PASSWORD": self.password(acl.INGRESS),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DEDUP_LOGS": "0",
            # Token authentication on every node and client (a joining `ray start` does not turn it
            # on by itself), with this cluster's own token (0600 file in the state folder).
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_file),
        }

    @property
    def token_file(self) -> Path:
        return self.state / "ray-auth-token"

    def _ensure_token(self) -> None:
        if not self.token_file.exists():
            import secrets

            self.token_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))

    def _ray_argv(self, node: str) -> list[str]:
        ray = str(Path(sys.executable).with_name("ray"))
        b = _RAY_PORT_BASE[node]
        lo, hi = _RAY_WORKER_PORTS[node]
        argv = [ray, "start", f"--node-ip-address={HOST}", f"--node-manager-port={b}",
                f"--object-manager-port={b + 1}", f"--dashboard-agent-listen-port={b + 2}",
                f"--dashboard-agent-grpc-port={b + 3}", f"--runtime-env-agent-port={b + 4}",
                f"--min-worker-port={lo}", f"--max-worker-port={hi}",
                f"--metrics-export-port={RAY_METRICS_PORTS[node]}", "--object-store-memory=80000000",
                "--disable-usage-stats"]
        if node == "head":
            argv += ["--head", f"--port={RAY_GCS_PORT}", f"--ray-client-server-port={RAY_CLIENT_PORT}",
                     "--include-dashboard=true", f"--dashboard-host={HOST}",
                     f"--dashboard-port={RAY_DASHBOARD_PORT}", f"--temp-dir={self.ray_temp}",
                     "--num-cpus=1", "--resources=" + json.dumps({"grdline_head": 1})]
        else:
            argv += [f"--address={HOST}:{RAY_GCS_PORT}", f"--num-cpus={WORKER_CPUS}",
                     "--resources=" + json.dumps({MODEL_RESOURCE: 1, INGRESS_RESOURCE: 1, f"grdline_{node}": 1})]
        return argv

    def start_ray_node(self, node: str, timeout: float = 120.0) -> None:
        """``ray start`` one node in a session of its own: every process of that node (GCS,
        dashboard, raylet, agents, log monitor, the workers the raylet forks) is then found by
        its session id or as a descendant of them (:meth:`ray_pids`)."""
        log = self.state / "ray" / f"start-{node}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(self._ray_argv(node), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **self.ray_env()})
            self._pid_file(f"ray-{node}").parent.mkdir(parents=True, exist_ok=True)
            self._pid_file(f"ray-{node}").write_text(str(proc.pid))  # = the node's session id
            code = proc.wait(timeout=timeout)
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise ClusterError(f"ray start ({node}) failed with exit code {code}:\n{tail}")

    def ray_pids(self, node: str | None = None) -> list[int]:
        """PIDs of one Ray node (its raylet, agents, log monitor and the workers/replicas it
        forked; for the head also GCS and dashboard), or with ``node=None`` of the whole cluster:
        the members of each node's session and their descendants, plus any process naming this
        cluster's Ray folder or GCS port."""
        sids = set()
        for n in ([node] if node else RAY_NODES):
            try:
                sids.add(int(self._pid_file(f"ray-{n}").read_text()))
            except (FileNotFoundError, ValueError):
                pass
        marks = [] if node else [str(self.ray_temp), f"--gcs_server_port={RAY_GCS_PORT}"]
        return _process_tree(sids, marks)

    def kill_ray_node(self, node: str) -> list[int]:
        """SIGKILL a Ray node: its raylet and every process it runs (a lost host)."""
        pids = self.ray_pids(node)
        if not pids:
            raise ClusterError(f"Ray node {node} has no running process")
        _kill_wait(pids, signal.SIGKILL, 30.0)
        self._pid_file(f"ray-{node}").unlink(missing_ok=True)
        return pids

    def _get(self, path: str, timeout: float = 10.0) -> Any:
        url = f"http://{HOST}:{RAY_DASHBOARD_PORT}{path}"
        request = urllib.request.Request(url, headers=_ray_auth_headers(self.token_file))
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.loads(r.read())

    def ray_nodes(self) -> dict[str, dict]:
        """Alive Ray nodes by role ("head", "w1", "w2"), from the state API (node_id, resources)."""
        data = self._get("/api/v0/nodes?limit=100&detail=true")
        out = {}
        for n in data["data"]["result"]["result"]:
            if n.get("state") != "ALIVE":
                continue
            for role in RAY_NODES:
                if f"grdline_{role}" in n.get("resources_total", {}):
                    out[role] = n
        return out

    def dashboard_up(self) -> bool:
        try:
            self._get("/api/serve/applications/", timeout=3)
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    # ------------------------------------------------------------------------- serve
    def deploy_serve(self, config: dict[str, Any]) -> None:
        """``serve deploy`` (Ray's own client: the dashboard's REST API) of ``config``."""
        path = self.state / "serve-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        serve_cli = str(Path(sys.executable).with_name("serve"))
        proc = subprocess.run([serve_cli, "deploy", str(path), "-a", f"http://{HOST}:{RAY_DASHBOARD_PORT}"],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **self.ray_env()})
        if proc.returncode != 0:
            raise ClusterError(f"serve deploy failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")

    def serve_status(self, app: str = "grdline") -> dict[str, Any]:
        """Serve's view of ``app``: status and, per deployment, its replicas with their node ids."""
        data = self._get("/api/serve/applications/")
        return data.get("applications", {}).get(app, {})

    def replica_nodes(self, app: str = "grdline") -> dict[str, list[str]]:
        """``{deployment: [node role of each RUNNING replica]}``."""
        roles = {n["node_id"]: role for role, n in self.ray_nodes().items()}
        out: dict[str, list[str]] = {}
        for name, dep in self.serve_status(app).get("deployments", {}).items():
            out[name] = sorted(roles.get(r.get("node_id"), "?") for r in dep.get("replicas", [])
                               if r.get("state") == "RUNNING")
        return out

    # ------------------------------------------------------------------------- life cycle
    def up(self, timeout: float = 240.0, frames_leader: int | None = None) -> None:
        """Kafka (3), Redis, topics with replication 3, Ray head + 2 workers. Idempotent.
        ``frames_leader``: see :func:`ensure_topics`."""
        stack = load_stack()
        self.state.mkdir(parents=True, exist_ok=True)
        self.format_kafka()
        for node in BROKERS:
            self.start_broker(node)
        self.start_redis()
        stack._wait("redis (cluster)", self.redis_up, 30)
        stack._wait("kafka cluster (3 brokers)", self.brokers_up, timeout, self.state / "kafka-1" / "server.log")
        ensure_topics(bootstrap_servers(), frames_leader, client_kwargs=self.admin_kwargs())
        self.apply_acls()
        self._ensure_token()
        if not self.dashboard_up():
            self.start_ray_node("head")
        stack._wait("ray dashboard", self.dashboard_up, timeout, self.state / "ray" / "start-head.log")
        alive = self.ray_nodes()
        for node in ("w1", "w2"):
            if node not in alive:
                self.start_ray_node(node)
        stack._wait("ray workers", lambda: len(self.ray_nodes()) == len(RAY_NODES), timeout)

    def down(self, timeout: float = 60.0, fast: bool = False) -> list[str]:
        """Stop every process of this cluster (all brokers at once; ``fast``: SIGKILL, for
        throw-away state such as the drill's); raises if one survives."""
        sig = signal.SIGKILL if fast else signal.SIGTERM
        stopped = []
        ray = self.ray_pids()
        if ray:
            _kill_wait(ray, sig, 15.0)
            stopped.append(f"ray ({len(ray)} processes)")
        for n in RAY_NODES:
            self._pid_file(f"ray-{n}").unlink(missing_ok=True)
        names = [n for n in ("redis", *(f"kafka-{b}" for b in BROKERS)) if self.pid(n) is not None]
        pids = [p for n in names if (p := self.pid(n)) is not None]
        _kill_wait(pids, sig, timeout, group=True)
        for n in names:
            self._pid_file(n).unlink(missing_ok=True)
        stopped += names
        left = self.ray_pids() + [p for p in pids if load_stack()._alive(p)]
        if left:
            raise ClusterError(f"processes still running after down: {left}")
        return stopped

    def status(self) -> str:
        lines = [f"state: {self.state}"]
        for node in BROKERS:
            lines.append(f"kafka-{node}  {HOST}:{KAFKA_PORTS[node]}  pid {self.pid(f'kafka-{node}') or '-'}")
        lines.append(f"redis    {HOST}:{REDIS_PORT}  pid {self.pid('redis') or '-'}")
        if self.dashboard_up():
            nodes = self.ray_nodes()
            lines.append(f"ray      {HOST}:{RAY_GCS_PORT}  nodes {sorted(nodes)}  dashboard :{RAY_DASHBOARD_PORT}")
            app = self.serve_status()
            if app:
                lines.append(f"serve    app grdline {app.get('status')}  replicas {self.replica_nodes()}")
        else:
            lines.append("ray      down")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- topics, serve config


def ensure_topics(bootstrap: str, frames_leader: int | None = None,
                  client_kwargs: dict[str, Any] | None = None) -> None:
    """Create the project topics (ingest.topics.DEFAULT_TOPICS) with replication 3
    (``client_kwargs``: kafka-python arguments with credentials; default: no authentication).

    ``frames_leader``: make that broker the preferred leader of every frames partition (the drill
    kills it); otherwise Kafka spreads the leaders."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from ingest.topics import DEFAULT_TOPICS, FRAMES

    kw = {**(client_kwargs or {}), "bootstrap_servers": bootstrap.split(",")}
    admin = KafkaAdminClient(**kw, request_timeout_ms=30_000)
    try:
        existing = set(admin.list_topics())
        for spec in DEFAULT_TOPICS:
            if spec.name in existing:
                continue
            configs = {**spec.configs(), "min.insync.replicas": str(MIN_INSYNC_REPLICAS)}
            if spec.name == FRAMES and frames_leader is not None:
                others = [n for n in BROKERS if n != frames_leader]
                assignment = {p: [frames_leader, *others[p % 2:], *others[:p % 2]]
                              for p in range(spec.partitions)}
                topic = NewTopic(spec.name, -1, -1, replica_assignments=assignment, topic_configs=configs)
            else:
                topic = NewTopic(spec.name, spec.partitions, REPLICATION_FACTOR, topic_configs=configs)
            try:
                admin.create_topics([topic], timeout_ms=30_000)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def serve_config(model_dir: Path, *, ingress_replicas: int = 2, model_replicas: int = 2,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """deploy/serve/grdline.yaml made to fit this cluster: the given model, fixed replica counts
    spread one per worker node (custom resources + ``max_replicas_per_node``), CPU only, no HTTP
    proxy (the line needs none), quicker consumer-group failure detection. ``overrides`` is merged
    into the app's ``args.config``."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["proxy_location"] = "Disabled"
    config["http_options"] = {"host": HOST, "port": 28000}
    (app,) = config["applications"]
    app["args"]["model_dir"] = str(model_dir)
    c = app["args"]["config"]
    c["model"] = {**c["model"], "device": "cpu", "num_cpus": 0.5, "torch_threads": 1, "warmup_batches": 1,
                  "num_replicas": model_replicas, "autoscaling": None}
    c["ingress"] = {**c["ingress"], "num_replicas": ingress_replicas, "num_cpus": 0.25,
                    "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                    "max_poll_interval_ms": 20_000, "revoke_drain_timeout_s": 5.0}
    if overrides:
        c.update(_merge(c, overrides))
    deployments = {d["name"]: d for d in app.get("deployments", [])}
    deployments.setdefault("GRDNetModel", {"name": "GRDNetModel"}).update({
        "num_replicas": model_replicas, "max_replicas_per_node": 1,
        "ray_actor_options": {"num_cpus": 0.5, "resources": {MODEL_RESOURCE: 1}},
    })
    deployments.setdefault("LineIngress", {"name": "LineIngress"}).update({
        "num_replicas": ingress_replicas, "max_replicas_per_node": 1,
        "ray_actor_options": {"num_cpus": 0.25, "resources": {INGRESS_RESOURCE: 1}},
    })
    app["deployments"] = list(deployments.values())
    return config


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------- processes


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _redact(text: str, cluster: Cluster) -> str:
    """``text`` with every password of ``cluster`` replaced (error messages quote tool output)."""
    for user in (*(p.name for p in acl.principals()), CONTROLLER_USER, "redis"):
        text = text.replace(cluster.password(user), "<redacted>")
    return text


def _ray_auth_headers(token_file: Path) -> dict[str, str]:
    """The bearer token Ray's own clients send under token authentication. Never logged."""
    token = token_file.read_text().strip() if token_file.exists() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, session id)`` of a live, non-zombie process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3])


def _process_tree(sids: set[int], marks: list[str]) -> list[int]:
    """Live processes in one of the sessions ``sids`` or whose command line holds one of
    ``marks``, and all their descendants (a process may leave the session, not the tree)."""
    me = os.getpid()
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            st = _stat(int(entry.name))
            if st is not None:
                procs[int(entry.name)] = st
    chosen = {pid for pid, (_, sid) in procs.items() if sid in sids}
    if marks:
        chosen |= {pid for pid in procs if any(m in _cmdline(pid) for m in marks)}
    grew = True
    while grew:
        kids = {pid for pid, (ppid, _) in procs.items() if ppid in chosen} - chosen
        chosen |= kids
        grew = bool(kids)
    return sorted(chosen)


def _kill_wait(pids: list[int], sig: int, timeout: float, alive=None, group: bool = False) -> None:
    """Send ``sig`` to ``pids`` (their process groups with ``group``), SIGKILL what is left after
    ``timeout``, and wait until all are gone."""
    alive = alive or load_stack()._alive

    def send(s: int) -> None:
        for pid in pids:
            try:
                os.killpg(pid, s) if group else os.kill(pid, s)
            except (ProcessLookupError, PermissionError):
                pass

    send(sig)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    if any(alive(p) for p in pids):
        send(signal.SIGKILL)
        while any(alive(p) for p in pids):
            time.sleep(0.1)


def default_cluster() -> Cluster:
    return Cluster(Path(os.environ.get("GRDLINE_CLUSTER_DIR", REPO / "var" / "cluster")))


def run(action: str, model_dir: str | None = None) -> int:
    """``grdline stack ACTION --cluster``: up [with the Serve app when a model is given], down, status."""
    cluster = default_cluster()
    try:
        if action == "up":
            cluster.up()
            if model_dir:
                cluster.deploy_serve(serve_config(Path(model_dir).resolve()))
                print("cluster: serve deploy submitted; `grdline stack status --cluster` shows the replicas")
            print(cluster.status())
        elif action == "down":
            print(f"cluster: stopped {', '.join(cluster.down()) or 'nothing (none running)'}")
        elif action == "status":
            print(cluster.status())
        else:
            raise ClusterError(f"action {action!r} is not supported with --cluster")
    except ClusterError as exc:
        print(f"cluster: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        if name == "up":
            p.add_argument("--model", help="model artefact: also serve-deploy the app")
    t = sub.add_parser("topics", help="create the project topics with replication 3")
    t.add_argument("--bootstrap", default=bootstrap_servers())
    args = parser.parse_args(argv)
    if args.action == "topics":
        ensure_topics(args.bootstrap)
        print(f"topics ready on {args.bootstrap} (replication {REPLICATION_FACTOR})")
        return 0
    return run(args.action, getattr(args, "model", None))


if __name__ == "__main__":
    sys.exit(main())
