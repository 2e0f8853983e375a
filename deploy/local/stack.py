"""The local stack: a real Apache Kafka 4 broker (KRaft), Redis and Prometheus on loopback.

Used by ``grdline stack up|down|status``, by ``make demo`` and by the integration-test session.
Idempotent: ``up`` starts only what is not already answering; ``down`` stops by PID what ``up``
started and waits until the process is gone. State (data, logs, PID files) lives under
``var/stack/`` in the checkout (git-ignored); the Kafka jars are fetched once from Maven Central
into a cache folder outside the checkout (``$GRDLINE_CACHE``, default ``~/.cache/grdline``),
keyed by the hash of ``deploy/local/kafka/pom.xml``.

Ports and addresses come from the packages' settings (one home for every default):
``ingest.settings`` (Kafka), ``inference.settings`` (Redis, Ray metrics port),
``dashboards.settings`` (Prometheus).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dashboards.alerts import render_alert_rules
from dashboards.prometheus import render_prometheus_config
from dashboards.settings import PROMETHEUS_PORT
from inference.redis_memory import memory_config
from inference.settings import REDIS_PORT
from ingest.settings import KAFKA_CONTROLLER_PORT, KAFKA_PORT
from ingest.topics import MAX_MESSAGE_BYTES

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STATE = Path(os.environ.get("GRDLINE_STACK_DIR", REPO / "var" / "stack"))
CACHE = Path(os.environ.get("GRDLINE_CACHE", Path.home() / ".cache" / "grdline"))
POM = HERE / "kafka" / "pom.xml"
HOST = "127.0.0.1"
SERVICES = ("kafka", "redis", "prometheus")


class StackError(RuntimeError):
    """A service could not be installed, started, checked or stopped; the message says which."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    up: bool
    address: str
    pid: int | None
    detail: str = ""


# --------------------------------------------------------------------------- helpers


def _pid_file(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def _read_pid(name: str) -> int | None:
    try:
        pid = int(_pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    tail = ""
    if log is not None and log.exists():
        tail = "\n--- last lines of " + str(log) + " ---\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-25:]
        )
    raise StackError(f"{what} did not become ready within {timeout:.0f}s{tail}")


def _require(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise StackError(f"'{binary}' not found on PATH: {hint}")
    return path


def _spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    _pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the caller; stopped by PID in down()
            env={**os.environ, **(env or {})},
        )
    _pid_file(name).write_text(str(proc.pid))
    return proc.pid


def _start(name: str, ports: Iterable[int], ready: Callable[[], bool], log: Path,
           timeout: float, launch: Callable[[], None]) -> None:
    """Start one service unless its PID is alive: ports must be free, then wait until ready."""
    if _read_pid(name) is None:
        for port in ports:
            _check_port_free(name, port)
        launch()
    _wait(name, ready, timeout, log)


def _check_port_free(name: str, port: int) -> None:
    if _port_open(port):
        raise StackError(
            f"{name}: port {HOST}:{port} is taken by a process this stack did not start "
            f"(no live PID in {_pid_file(name)}). Stop that process or change the port."
        )


# --------------------------------------------------------------------------- kafka


def kafka_lib_dir() -> Path:
    """The folder holding the broker's jars, fetched from Maven Central on first use."""
    key = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    lib = CACHE / f"kafka-{key}" / "lib"
    if (lib / ".complete").exists():
        return lib
    mvn = _require("mvn", "install Maven (Debian package 'maven'); `make setup` does it")
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"stack: fetching the Kafka broker jars from Maven Central into {lib} ...", flush=True)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise StackError(f"mvn could not fetch the Kafka jars:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    (lib / ".complete").write_text("ok\n")
    return lib


def kafka_version() -> str:
    """The broker version, read from the jar the stack runs (``kafka_2.13-<version>.jar``)."""
    for jar in kafka_lib_dir().glob("kafka_2.13-*.jar"):
        return jar.stem.removeprefix("kafka_2.13-")
    raise StackError(f"no kafka_2.13 jar in {kafka_lib_dir()}")


def _kafka_config(data: Path) -> str:
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{HOST}:{KAFKA_CONTROLLER_PORT}",
        f"listeners=PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{KAFKA_PORT}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        "group.initial.rebalance.delay.ms=0",
        # Frames are images: let a record of MAX_MESSAGE_BYTES plus batch overhead through.
        f"message.max.bytes={MAX_MESSAGE_BYTES + 64 * 1024}",
        f"replica.fetch.max.bytes={MAX_MESSAGE_BYTES + 64 * 1024}",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "log.retention.hours=24",
        "log.segment.bytes=67108864",
        "num.network.threads=2",
        "num.io.threads=4",
        "",
    ])


_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka
        level: WARN
      - name: org.apache.kafka
        level: WARN
      - name: kafka.server.KafkaServer
        level: INFO
      - name: org.apache.kafka.common.utils.AppInfoParser
        level: INFO
"""


def kafka_ready() -> bool:
    """True when the broker answers a metadata request through kafka-python."""
    if not _port_open(KAFKA_PORT):
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=[f"{HOST}:{KAFKA_PORT}"], request_timeout_ms=3000,
            client_id="grdline-stack-health",
        )
    except (KafkaError, OSError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def start_kafka(timeout: float = 120.0) -> None:
    home = STATE / "kafka"

    def launch() -> None:
        java = _require("java", "install Java 17 (Debian package 'openjdk-17-jre-headless')")
        lib = kafka_lib_dir()
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "server.properties"
        config.write_text(_kafka_config(data))
        log4j = home / "log4j2.yaml"
        log4j.write_text(_LOG4J2)
        jvm = [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise StackError(f"kafka storage format failed:\n{fmt.stdout}{fmt.stderr}")
        _spawn("kafka", [*jvm, "kafka.Kafka", str(config)], home / "server.log")

    _start("kafka", (KAFKA_PORT, KAFKA_CONTROLLER_PORT), kafka_ready, home / "server.log",
           timeout, launch)


# --------------------------------------------------------------------------- redis


def redis_ready() -> bool:
    if not _port_open(REDIS_PORT):
        return False
    import redis

    from inference.settings import RedisSettings

    try:
        kw = RedisSettings(port=REDIS_PORT).client_kwargs()
        return bool(redis.Redis(**kw, socket_timeout=2).ping())
    except redis.RedisError:
        return False


#: Redis durability: the append-only file, fsynced once a second. A write acknowledged more than
#: about this long before a crash (kill -9, power loss) is on disk; a clean SHUTDOWN (with or
#: without NOSAVE) fsyncs the AOF and loses nothing. README "Durability" says what production needs.
REDIS_FSYNC_WINDOW_S = 1.0


def _redis_config(home: Path, password: str | None = None) -> str:
    """redis.conf of the local stack: loopback, AOF (``appendfsync everysec``), no RDB snapshots,
    and ``maxmemory`` (sized by :mod:`inference.redis_memory`) with ``noeviction``, so that a full
    Redis refuses writes (an error the sink sees) instead of silently evicting results or reject
    claims — or growing until it is killed."""
    lines = [f"bind {HOST}", f"port {REDIS_PORT}", "save \"\"", "appendonly yes",
             "appendfsync everysec", *memory_config(),
             f"dir {home}", "daemonize no", "protected-mode yes"]
    if password:  # secret goes to a 0600 file, never onto a command line or a log
        lines.append(f"requirepass {password}")
    return "\n".join(lines) + "\n"


def start_redis(timeout: float = 30.0) -> None:
    home = STATE / "redis"

    def launch() -> None:
        server = _require("redis-server", "install Debian package 'redis-server'; `make setup` does it")
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "redis.conf"
        conf.write_text(_redis_config(home, os.environ.get("GRDLINE_REDIS_PASSWORD")))
        conf.chmod(0o600)
        _spawn("redis", [server, str(conf)], home / "redis.log")

    _start("redis", (REDIS_PORT,), redis_ready, home / "redis.log", timeout, launch)


# --------------------------------------------------------------------------- prometheus


def prometheus_ready() -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{PROMETHEUS_PORT}/-/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


#: Rule files the local Prometheus loads beside the project's (``*.yml``): the alert tests drop
#: short-window renderings of the rules here and call :func:`reload_prometheus`.
PROMETHEUS_EXTRA_RULES = STATE / "prometheus" / "rules.d"


def _write_prometheus_config() -> Path:
    """The config and rule files, rendered from the code; returns the config's path."""
    home = STATE / "prometheus"
    PROMETHEUS_EXTRA_RULES.mkdir(parents=True, exist_ok=True)
    rules = home / "grdline-rules.yml"
    rules.write_text(render_alert_rules())
    config = home / "prometheus.yml"
    config.write_text(render_prometheus_config(rule_files=[str(rules), str(PROMETHEUS_EXTRA_RULES / "*.yml")]))
    return config


def reload_prometheus() -> None:
    """Rewrite the config and rule files from the code and have the running Prometheus load them
    (``POST /-/reload``, on since it runs with ``--web.enable-lifecycle``)."""
    _write_prometheus_config()
    req = urllib.request.Request(f"http://{HOST}:{PROMETHEUS_PORT}/-/reload", method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            raise StackError(f"prometheus: reload answered {r.status}")


def start_prometheus(timeout: float = 60.0) -> None:
    home = STATE / "prometheus"

    def launch() -> None:
        binary = _require("prometheus", "install Debian package 'prometheus'; `make setup` does it")
        home.mkdir(parents=True, exist_ok=True)
        config = _write_prometheus_config()
        _spawn("prometheus", [
            binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={HOST}:{PROMETHEUS_PORT}", "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ], home / "prometheus.log")

    _start("prometheus", (PROMETHEUS_PORT,), prometheus_ready, home / "prometheus.log", timeout,
           launch)


# --------------------------------------------------------------------------- life cycle

_STARTERS: dict[str, Callable[[], None]] = {
    "kafka": start_kafka, "redis": start_redis, "prometheus": start_prometheus,
}
_READY: dict[str, Callable[[], bool]] = {
    "kafka": kafka_ready, "redis": redis_ready, "prometheus": prometheus_ready,
}
_ADDRESS = {
    "kafka": f"{HOST}:{KAFKA_PORT}", "redis": f"{HOST}:{REDIS_PORT}",
    "prometheus": f"http://{HOST}:{PROMETHEUS_PORT}",
}


def up(services: Iterable[str] = SERVICES) -> list[str]:
    """Start every service not already answering; return the names this call started."""
    started = []
    for name in services:
        if _read_pid(name) is None and _READY[name]():
            raise StackError(
                f"{name}: something already answers on {_ADDRESS[name]} that this stack did not "
                "start; stop it or change the port"
            )
        if _read_pid(name) is None:
            started.append(name)
        _STARTERS[name]()
    return started


def stop(name: str, timeout: float = 30.0) -> bool:
    """Stop one service by its PID (SIGTERM, then SIGKILL); True if it was running."""
    pid = _read_pid(name)
    if pid is None:
        _pid_file(name).unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    _pid_file(name).unlink(missing_ok=True)
    return True


def down(services: Iterable[str] = SERVICES) -> list[str]:
    return [name for name in services if stop(name)]


def restart_kafka(downtime_s: float = 0.0) -> None:
    """Stop the broker (cleanly), optionally stay down, then start it again (same data)."""
    stop("kafka")
    time.sleep(downtime_s)
    start_kafka()


def _redis_client():
    import redis

    from inference.settings import RedisSettings

    return redis.Redis(**RedisSettings(port=REDIS_PORT).client_kwargs(), socket_timeout=5)


def _redis_enable_aof(timeout: float = 60.0) -> None:
    """Turn AOF on in a running Redis started with an older config (``appendonly no``), and wait
    until the rewrite that writes its data into the AOF has finished, so a restart keeps the data."""
    client = _redis_client()
    try:
        if client.config_get("appendonly").get("appendonly") == "yes":
            return
        client.config_set("appendonly", "yes")
        client.config_set("appendfsync", "everysec")
        client.config_set("maxmemory-policy", "noeviction")

        def rewritten() -> bool:
            info = client.info("persistence")
            return (info.get("aof_enabled") == 1 and not info.get("aof_rewrite_in_progress")
                    and not info.get("aof_rewrite_scheduled"))

        _wait("redis AOF rewrite", rewritten, timeout)
    finally:
        client.close()


def restart_redis(mode: str = "shutdown", downtime_s: float = 0.0) -> None:
    """Restart Redis with the same data directory: ``shutdown`` (SIGTERM: fsync the AOF and exit),
    ``nosave`` (``SHUTDOWN NOSAVE``: no RDB snapshot; the AOF is still flushed), or ``kill``
    (SIGKILL: a crash; writes of the last :data:`REDIS_FSYNC_WINDOW_S` may be lost). A Redis still
    running an older config without AOF is switched to AOF first, so its data survives too."""
    import redis

    if mode not in ("shutdown", "nosave", "kill"):
        raise ValueError(f"mode must be shutdown, nosave or kill, not {mode!r}")
    pid = _read_pid("redis")
    if pid is None:
        raise StackError("redis: not started by this stack (no live PID); nothing to restart")
    _redis_enable_aof()
    if mode == "shutdown":
        stop("redis")
    else:
        if mode == "nosave":
            client = _redis_client()
            try:
                client.shutdown(nosave=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits
            finally:
                client.close()
        else:
            os.killpg(pid, signal.SIGKILL)
        _wait("redis exit", lambda: not _alive(pid), 30.0)
        _pid_file("redis").unlink(missing_ok=True)
    # the main process can be gone while a forked child (an AOF rewrite) still holds the listening
    # socket for a moment: start again only once the port is free
    _wait("redis port free", lambda: not _port_open(REDIS_PORT), 30.0)
    time.sleep(downtime_s)
    start_redis()


def pause_kafka() -> int:
    """Freeze the broker (SIGSTOP): connections stay open, nothing answers. Returns its PID; always
    pair with :func:`resume_kafka` (in a ``finally``)."""
    pid = _read_pid("kafka")
    if pid is None:
        raise StackError("kafka: not started by this stack (no live PID); cannot pause it")
    os.killpg(pid, signal.SIGSTOP)
    return pid


def resume_kafka(timeout: float = 60.0) -> None:
    """Let a paused broker run again (SIGCONT) and wait until it answers."""
    pid = _read_pid("kafka")
    if pid is None:
        raise StackError("kafka: no live PID to resume")
    os.killpg(pid, signal.SIGCONT)
    _wait("kafka after SIGCONT", kafka_ready, timeout, STATE / "kafka" / "server.log")


def status() -> list[ServiceStatus]:
    out = []
    for name in SERVICES:
        pid = _read_pid(name)
        ready = _READY[name]()
        detail = ""
        if name == "kafka" and (CACHE.exists()):
            try:
                detail = f"Apache Kafka {kafka_version()} (KRaft)"
            except StackError as exc:
                detail = str(exc)
        out.append(ServiceStatus(name, ready, _ADDRESS[name], pid, detail))
    return out


def format_status(rows: list[ServiceStatus]) -> str:
    lines = [f"{'service':<11} {'state':<5} {'address':<24} {'pid':<8} detail"]
    for r in rows:
        lines.append(
            f"{r.name:<11} {'up' if r.up else 'down':<5} {r.address:<24} {r.pid or '-'!s:<8} {r.detail}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="stack", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status", "restart-kafka", "restart-redis"])
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.services) - set(SERVICES)
    if unknown:
        parser.error(f"unknown service(s) {sorted(unknown)}; choose from {SERVICES}")
    return run(args.action, args.services or list(SERVICES))


def run(action: str, services: list[str]) -> int:
    try:
        if action == "up":
            started = up(services)
            print(f"stack: started {', '.join(started) or 'nothing (all up already)'}")
            print(f"stack: Apache Kafka broker version {kafka_version()}")
            print(format_status(status()))
        elif action == "down":
            stopped = down(services)
            print(f"stack: stopped {', '.join(stopped) or 'nothing (none running)'}")
        elif action == "restart-kafka":
            restart_kafka()
            print("stack: kafka restarted")
        elif action == "restart-redis":
            restart_redis()
            print("stack: redis restarted (AOF on)")
        else:
            rows = status()
            print(format_status(rows))
            return 0 if all(r.up for r in rows if r.name in services) else 3
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
