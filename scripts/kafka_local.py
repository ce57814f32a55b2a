#!/usr/bin/env python3
"""The project's own single-node Apache Kafka broker (KRaft), run from Maven Central jars: no Docker, no tarball.

Owns: fetching the broker jars once into the cache, writing the broker's config into a directory the caller picks,
formatting its storage, starting it detached, waiting until it answers Kafka requests, and stopping it by its own
process id. Used by tests (tests/integration/conftest.py), CI and the demo. See docs/kafka-local.md.

Must not touch: the project's venv (this runs before one exists, so it is stdlib-only Python >= 3.11), anything
outside the cache and the directory given with --dir, and any process it did not start (stop checks the pid's
command line first).

Exit codes: 0 ok, 1 failure (broker did not come up, bad directory, ...), 2 missing or too old java / mvn,
3 `status`: not running.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

DEFAULT_KAFKA_VERSION = "4.1.2"
MIN_JAVA = 17
HERE = Path(__file__).resolve().parent
POM = HERE / "kafka" / "pom.xml"
LOG4J_CONFIG = HERE / "kafka" / "log4j2.properties"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
NODE_ID = 1
HOST = "127.0.0.1"
# Users of the SASL_PLAINTEXT listener (same name/password for PLAIN and SCRAM-SHA-256). Test-only secrets.
SASL_USERS = {"streamrnn": "streamrnn-secret", "admin": "admin-secret"}
# The JVM flags of Kafka's kafka-run-class.sh, with a heap sized for a 2-core CI box, plus C1 only
# (TieredStopAtLevel=1): it halves the broker's start-up CPU and, measured, costs the tests and the demo nothing (the
# broker's share of a kafka-python produce/consume run is small). STREAMRNN_KAFKA_JVM_OPTS is appended last, so
# `-XX:TieredStopAtLevel=4` brings C2 back and `-Xmx1g` wins.
JVM_FLAGS = [
    "-Xms256m", "-Xmx512m", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent", "-XX:MaxInlineLevel=15",
    "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
]
SETTINGS_FILE = "kafka-local.json"


class KafkaLocalError(Exception):
    """A failure reported to the user as one message and an exit code (no traceback)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    # Progress goes to stderr: stdout carries only the addresses, so `$(kafka-local start ... | tail -1)` works.
    print(f"kafka-local: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Prerequisites and the jar cache


def cache_root() -> Path:
    # Same rule as scripts/bootstrap, so the venv and the jars share one cache directory.
    if os.environ.get("STREAMRNN_CACHE"):
        return Path(os.environ["STREAMRNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamrnn"


@dataclass(frozen=True)
class Java:
    path: str
    major: int
    version_text: str  # `java -version` output: part of the class-data archive's key


def find_java() -> Java:
    """A java >= 17 (JAVA_HOME first, then PATH); KafkaLocalError(code 2) otherwise."""
    java_home = os.environ.get("JAVA_HOME")
    java = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    java = java or shutil.which("java")
    if not java:
        raise KafkaLocalError(f"java not found (need Java >= {MIN_JAVA} on PATH or in JAVA_HOME; "
                              "e.g. `apt-get install openjdk-17-jre-headless`)", 2)
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaLocalError(f"cannot run {java} -version: {exc}", 2) from exc
    text = (out.stderr + out.stdout).strip()
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        raise KafkaLocalError(f"cannot read the Java version from `{java} -version`:\n{text}", 2)
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise KafkaLocalError(f"{java} is Java {major}; Apache Kafka 4.x needs Java >= {MIN_JAVA} "
                              "(set JAVA_HOME to a newer one)", 2)
    return Java(path=java, major=major, version_text=text)


def version_dir(version: str) -> Path:
    return cache_root() / "kafka" / version


def pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def cached_libs(version: str) -> Path | None:
    """The libs directory if a complete fetch for this version and this pom is cached, else None."""
    marker = version_dir(version) / ".fetched"
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    libs = version_dir(version) / "libs"
    if info.get("pom") != pom_digest() or not (libs / f"kafka_2.13-{version}.jar").is_file():
        return None
    return libs


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    # Parallel test sessions / CI jobs sharing a cache wait for the first fetch instead of racing it.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(version: str) -> Path:
    """Collect the broker jars into the cache once; later calls only read the marker file."""
    libs = cached_libs(version)
    if libs:
        return libs
    if not version.startswith("4."):
        # The pom names the log4j2 binding of Kafka 4.x; 3.x logs through reload4j and needs other jars.
        raise KafkaLocalError(f"only Apache Kafka 4.x is supported by {POM} (asked for {version})")
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaLocalError("mvn not found: Maven >= 3.6 is needed once, to fetch the Kafka jars from Maven "
                              "Central (e.g. `apt-get install maven`)", 2)
    find_java()  # Maven needs it too, and a clear message beats Maven's.
    vdir = version_dir(version)
    with file_lock(vdir.parent / f".{version}.lock"):
        libs = cached_libs(version)
        if libs:  # another process fetched while we waited for the lock
            return libs
        started = time.monotonic()
        log(f"fetching Apache Kafka {version} jars from Maven Central into {vdir} (once)")
        tmp = vdir / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}",
               "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise KafkaLocalError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{tail}")
        jars = sorted(p.name for p in tmp.glob("*.jar"))
        for needed in (f"kafka_2.13-{version}.jar", f"kafka-clients-{version}.jar", "log4j-core-"):
            if not any(name.startswith(needed) for name in jars):
                shutil.rmtree(tmp, ignore_errors=True)
                raise KafkaLocalError(f"fetch incomplete: no {needed}* among {len(jars)} jars")
        libs = vdir / "libs"
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker = {"kafka_version": version, "pom": pom_digest(), "jars": jars,
                  "fetched_s": round(time.monotonic() - started, 1)}
        (vdir / ".fetched").write_text(json.dumps(marker, indent=1) + "\n")
        log(f"fetched {len(jars)} jars in {marker['fetched_s']} s")
        return libs


# --------------------------------------------------------------------------------------------------------------
# Broker directory: settings, server.properties, storage


@dataclass
class Settings:
    """What a broker directory was set up with; kept in DIR/kafka-local.json so a restart reuses the same ports."""

    version: str
    port: int
    controller_port: int
    sasl_port: int | None
    cluster_id: str

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"{HOST}:{self.sasl_port}" if self.sasl_port else None


def random_cluster_id() -> str:
    # Kafka's Uuid.randomUuid().toString(): 16 random bytes, URL-safe base64 without padding, never starting
    # with '-' (it would read as a command-line flag). Saves launching a JVM for `StorageTool random-uuid`.
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports, chosen below the kernel's ephemeral range when it leaves room.

    A port from the ephemeral range (what binding port 0 gives) can be handed to a client's outgoing connection
    while the broker is stopped, and a client that keeps reconnecting to 127.0.0.1:P can even get local port P
    and connect to itself (TCP simultaneous open): either way the restart would find its port taken.
    """
    lo, _ = ephemeral_range()
    rng = random.SystemRandom()
    chosen: list[int] = []
    for _ in range(200):
        if len(chosen) == count or lo <= 10_000:
            break
        port = rng.randrange(10_000, lo)
        if port not in chosen and port_is_free(port, reuse=False):
            chosen.append(port)
    sockets = []
    try:  # fallback: let the kernel pick (hold all sockets so the ports differ)
        while len(chosen) + len(sockets) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return chosen + [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 49152, 65535  # the IANA range, which macOS uses


def port_is_free(port: int, reuse: bool = True) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse:  # like the JVM's server sockets: a port only in TIME_WAIT after a stop counts as free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def load_settings(directory: Path) -> Settings | None:
    path = directory / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        return Settings(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise KafkaLocalError(f"{path} is unreadable ({exc}); use a fresh --dir") from exc


def resolve_settings(directory: Path, version: str, port: int | None, sasl: bool) -> Settings:
    """Reuse the settings of an existing broker directory (restart) or choose new ones (first start)."""
    saved = load_settings(directory)
    if saved is not None:
        if port is not None and port != saved.port:
            raise KafkaLocalError(f"{directory} was set up with port {saved.port}, not {port}; "
                                  "omit --port or use a fresh --dir")
        if sasl and saved.sasl_port is None:
            raise KafkaLocalError(f"{directory} was formatted without --sasl (no SCRAM users); use a fresh --dir")
        if version != saved.version:
            raise KafkaLocalError(f"{directory} holds a Kafka {saved.version} broker, not {version}")
        return saved
    if (directory / "data" / "meta.properties").exists():
        raise KafkaLocalError(f"{directory}/data is formatted but {SETTINGS_FILE} is missing; use a fresh --dir")
    wanted = 1 + (port is None) + sasl
    picked = free_ports(wanted)
    chosen_port = port if port is not None else picked.pop()
    settings = Settings(version=version, port=chosen_port, controller_port=picked.pop(),
                        sasl_port=picked.pop() if sasl else None, cluster_id=random_cluster_id())
    if settings.port in (settings.controller_port, settings.sasl_port):
        raise KafkaLocalError(f"port {settings.port} collides with a picked port; try again")
    return settings


def server_properties(directory: Path, s: Settings) -> str:
    listeners = [f"PLAINTEXT://{HOST}:{s.port}", f"CONTROLLER://{HOST}:{s.controller_port}"]
    if s.sasl_port:
        listeners.append(f"SASL_PLAINTEXT://{HOST}:{s.sasl_port}")
    lines = [
        "# Written by scripts/kafka-local at every start (edits are overwritten). Single-node KRaft broker.",
        "process.roles=broker,controller",
        f"node.id={NODE_ID}",
        # With `format --standalone` (dynamic quorum): bootstrap servers, NOT controller.quorum.voters.
        f"controller.quorum.bootstrap.servers={HOST}:{s.controller_port}",
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(listeners)}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={directory / 'data'}",
        "num.partitions=1",
        "auto.create.topics.enable=true",
        # One broker: every internal topic has replication factor 1, and one partition (the defaults of 50
        # make the first group join / transaction noticeably slower).
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "share.coordinator.state.topic.num.partitions=1",
        "group.initial.rebalance.delay.ms=0",
        # The 128 MiB default is allocated at start; tests and the demo need nothing like it.
        "log.cleaner.dedupe.buffer.size=16777216",
        "log.segment.bytes=16777216",
        "log.retention.hours=24",
        "num.network.threads=2",
        "num.io.threads=4",
        "num.recovery.threads.per.data.dir=1",
    ]
    if s.sasl_port:
        users = " ".join(f'user_{name}="{password}"' for name, password in SASL_USERS.items())
        lines += [
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
            # SCRAM users live in the cluster metadata (added by `format --add-scram`), not in this file.
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Runtime:
    """What launching a JVM needs: the java, the jars and (when built) the class-data archive."""

    java: Java
    libs: Path
    archive: Path | None = None

    def command(self, directory: Path, main: list[str], console: bool = False,
                dump_archive: Path | None = None) -> list[str]:
        flags = [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={directory / 'logs'}"]
        if console:
            flags.append("-Dkafka.local.console=INFO")
        if dump_archive:
            flags.append(f"-XX:ArchiveClassesAtExit={dump_archive}")
        elif self.archive:
            flags.append(f"-XX:SharedArchiveFile={self.archive}")
        extra = os.environ.get("STREAMRNN_KAFKA_JVM_OPTS", "").split()
        return [self.java.path, *JVM_FLAGS, *flags, *extra, "-cp", f"{self.libs}/*", *main]


def format_storage(rt: Runtime, directory: Path, s: Settings) -> None:
    """Format DIR/data once; a directory formatted before (a restart) is left alone."""
    if (directory / "data" / "meta.properties").exists():
        return
    args = ["format", "--standalone", "--ignore-formatted", "-t", s.cluster_id,
            "-c", str(directory / "server.properties")]
    if s.sasl_port:
        for name, password in SASL_USERS.items():
            args += ["--add-scram", f"SCRAM-SHA-256=[name={name},password={password}]"]
    cmd = rt.command(directory, [STORAGE_TOOL, *args])
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise KafkaLocalError(f"formatting {directory / 'data'} failed (exit {result.returncode}):\n"
                              f"{(result.stdout + result.stderr).strip()}")


# --------------------------------------------------------------------------------------------------------------
# Processes


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (a killed broker whose parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:  # no /proc (macOS): fall back to signal 0
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
        return out.stdout


def read_pid(directory: Path) -> int | None:
    try:
        return int((directory / "broker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def broker_pid(directory: Path) -> int | None:
    """The pid in DIR/broker.pid if that process is alive and is this directory's broker; else None."""
    pid = read_pid(directory)
    if pid is None or not pid_alive(pid):
        return None
    cmdline = pid_cmdline(pid)
    if MAIN_CLASS not in cmdline or str(directory / "server.properties") not in cmdline:
        return None  # the pid was reused by another process: never signal it
    return pid


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def log_tail(directory: Path, lines: int = 40) -> str:
    parts = []
    for name in ("logs/kafka.out", "logs/server.log"):
        path = directory / name
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or f"(no log files in {directory}/logs)"


# --------------------------------------------------------------------------------------------------------------
# Readiness: a few Kafka protocol requests over a plain socket


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return bytes(data)


def _kafka_request(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    client_id = b"kafka-local"
    # Request header v1 (api_key, api_version, correlation_id, client_id): understood for every non-flexible
    # request version, which is all this module sends.
    message = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(message)) + message)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    response = _recv_exact(sock, size)
    if struct.unpack_from(">i", response)[0] != correlation:
        raise ConnectionError("response correlation id mismatch")
    return response[4:]


def api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    """ApiVersions v0 (every broker answers it, also before SASL authentication): {api_key: (min, max)}."""
    body = _kafka_request(sock, 18, 0, 1, b"")
    error, count = struct.unpack_from(">hi", body)
    if error:
        raise ConnectionError(f"ApiVersions error code {error}")
    return {key: (lo, hi) for key, lo, hi in (struct.unpack_from(">hhh", body, 6 + 6 * i) for i in range(count))}


def metadata_brokers(sock: socket.socket, versions: dict[int, tuple[int, int]]) -> list[int]:
    """Node ids of the live (registered, unfenced) brokers, from a Metadata request for no topics."""
    lo, hi = versions.get(3, (0, -1))
    version = min(hi, 8)  # v9+ is flexible (tagged fields); 1..8 share one simple layout
    if version < max(lo, 1):
        raise ConnectionError(f"broker offers Metadata v{lo}..v{hi}, none of v1..v8")
    body = struct.pack(">i", 0)  # topics: empty array = no topics (null would mean all)
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation
    if version >= 8:
        body += b"\x00\x00"  # include cluster / topic authorized operations
    data = _kafka_request(sock, 3, version, 2, body)
    offset = 4 if version >= 3 else 0  # throttle_time_ms
    (count,) = struct.unpack_from(">i", data, offset)
    offset += 4
    nodes = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", data, offset)
        offset += 6 + host_len + 4  # node_id, host, port
        (rack_len,) = struct.unpack_from(">h", data, offset)
        offset += 2 + max(rack_len, 0)
        nodes.append(node_id)
    return nodes


def probe(port: int, timeout: float = 3.0, metadata: bool = True) -> str | None:
    """None when the listener answers (and, with metadata, lists this broker as live); else why not."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            versions = api_versions(sock)
            if not metadata:
                return None
            nodes = metadata_brokers(sock, versions)
            return None if NODE_ID in nodes else f"broker not yet registered (live brokers: {nodes})"
    except (OSError, ConnectionError, struct.error) as exc:
        return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------------------------
# Commands


def prepare(directory: Path, version: str, port: int | None, sasl: bool) -> tuple[Runtime, Settings]:
    """Everything before launching the broker of DIR: jars, class-data archive, settings, config, storage."""
    java = find_java()
    libs = fetch(version)
    rt = Runtime(java, libs, ensure_archive(java, libs, version))
    running = broker_pid(directory)
    if running:
        raise KafkaLocalError(f"a broker is already running from {directory} (pid {running}); "
                              f"`kafka-local stop --dir {directory}` first")
    return rt, setup_directory(rt, directory, version, port, sasl)


def setup_directory(rt: Runtime, directory: Path, version: str, port: int | None, sasl: bool) -> Settings:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    settings = resolve_settings(directory, version, port, sasl)
    for p in (settings.port, settings.controller_port, settings.sasl_port):
        if p and not port_is_free(p):
            raise KafkaLocalError(f"port {p} on {HOST} is in use (by another broker or program)")
    (directory / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=1) + "\n")
    (directory / "server.properties").write_text(server_properties(directory, settings))
    format_storage(rt, directory, settings)
    return settings


def launch(rt: Runtime, directory: Path, settings: Settings, timeout: float,
           dump_archive: Path | None = None) -> subprocess.Popen:
    """Start the broker of DIR detached and return once it answers; on any failure it is stopped again."""
    cmd = rt.command(directory, [MAIN_CLASS, str(directory / "server.properties")], dump_archive=dump_archive)
    with open(directory / "logs" / "kafka.out", "ab") as out:
        # Own session: no controlling terminal, and Ctrl-C or the end of the calling shell/pytest does not reach
        # it. stdout/stderr go to a file so the caller's pipes close when this script exits.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=directory, start_new_session=True, close_fds=True)
    (directory / "broker.pid").write_text(f"{proc.pid}\n")
    try:
        wait_ready(proc, settings, timeout, directory)
    except BaseException:  # timeout, early exit, Ctrl-C: never leave a half-started broker behind
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        (directory / "broker.pid").unlink(missing_ok=True)
        raise
    return proc


# --------------------------------------------------------------------------------------------------------------
# Class-data archive (AppCDS): the JVM maps the broker's ~10k already parsed and verified classes from one file
# instead of loading them from 46 jars, which halves the start-up time and CPU. JDK 17 can only write a dynamic
# archive when a JVM exits (-XX:ArchiveClassesAtExit), so one training broker is started and stopped once per
# Java build and Kafka version. A JVM that finds the archive unusable (another Java, other flags) warns in
# logs/kafka.out and starts normally. STREAMRNN_KAFKA_CDS=0 turns it off.

ARCHIVE_RETRY_S = 24 * 3600


def archive_path(java: Java, libs: Path, version: str) -> Path:
    parts = [os.path.realpath(java.path), java.version_text, *JVM_FLAGS, *sorted(p.name for p in libs.glob("*.jar"))]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    return version_dir(version) / "cds" / f"broker-{key}.jsa"


def ensure_archive(java: Java, libs: Path, version: str) -> Path | None:
    """The class-data archive for this java, jars and flags, built once; None if disabled or it cannot be built."""
    if os.environ.get("STREAMRNN_KAFKA_CDS", "1") == "0":
        return None
    path = archive_path(java, libs, version)
    failed = path.with_suffix(".failed")

    def usable() -> Path | None | bool:
        if path.exists():
            return path
        with contextlib.suppress(OSError):  # a failure is retried a day later, not at every start
            if time.time() - failed.stat().st_mtime < ARCHIVE_RETRY_S:
                return None
        return False

    if (found := usable()) is not False:
        return found
    with file_lock(path.parent / ".lock"):
        if (found := usable()) is not False:
            return found
        started = time.monotonic()
        log("building the JVM class-data archive (once per Java and Kafka version; about halves each broker start)")
        train = Path(tempfile.mkdtemp(prefix="train-", dir=path.parent))
        tmp = path.parent / f"{path.stem}.tmp-{os.getpid()}.jsa"
        proc = None
        try:
            rt = Runtime(java, libs)
            settings = setup_directory(rt, train, version, None, sasl=False)
            proc = launch(rt, train, settings, 120, dump_archive=tmp)
            proc.terminate()  # the JVM writes the archive while it exits
            proc.wait(120)
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise KafkaLocalError(f"the JVM wrote no archive\n{log_tail(train, 10)}")
            tmp.rename(path)
            failed.unlink(missing_ok=True)
        except (KafkaLocalError, OSError, subprocess.SubprocessError) as exc:
            log(f"warning: no class-data archive, brokers start without one (retried in a day): {exc}")
            failed.write_text(f"{exc}\n")
            return None
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            shutil.rmtree(train, ignore_errors=True)
            tmp.unlink(missing_ok=True)
        log(f"class-data archive built in {time.monotonic() - started:.1f} s: {path}")
        return path


def cmd_fetch(args: argparse.Namespace) -> int:
    started = time.monotonic()
    libs = fetch(args.kafka_version)
    log(f"{len(list(libs.glob('*.jar')))} jars ready in {libs} ({time.monotonic() - started:.1f} s)")
    if not args.no_archive:
        java = find_java()
        archive = ensure_archive(java, libs, args.kafka_version)
        if archive:
            log(f"class-data archive ready: {archive}")
    print(libs)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    started = time.monotonic()
    directory = Path(args.dir).resolve()
    rt, settings = prepare(directory, args.kafka_version, args.port, args.sasl)
    for name in ("bootstrap", "bootstrap_sasl"):
        (directory / name).unlink(missing_ok=True)
    proc = launch(rt, directory, settings, args.timeout)
    (directory / "bootstrap").write_text(settings.bootstrap + "\n")
    if settings.sasl_bootstrap:
        (directory / "bootstrap_sasl").write_text(settings.sasl_bootstrap + "\n")
    if args.owner_pid:
        start_watchdog(directory, proc.pid, args.owner_pid)
    # Popen would otherwise warn that the (deliberately detached) broker is "still running" at exit.
    proc.returncode = 0
    log(f"Apache Kafka {settings.version} ready in {time.monotonic() - started:.1f} s, pid {proc.pid}, "
        f"logs in {directory / 'logs'}")
    if settings.sasl_bootstrap:
        print(f"sasl_bootstrap={settings.sasl_bootstrap}")
    print(settings.bootstrap, flush=True)
    return 0


def wait_ready(proc: subprocess.Popen, settings: Settings, timeout: float, directory: Path) -> None:
    deadline = time.monotonic() + timeout
    reason = "not probed yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KafkaLocalError(f"the broker exited with code {proc.returncode} during startup\n"
                                  f"{log_tail(directory)}")
        reason = probe(settings.port)
        if reason is None and settings.sasl_port:
            reason = probe(settings.sasl_port, metadata=False)
        if reason is None:
            return
        time.sleep(0.25)
    raise KafkaLocalError(f"the broker did not become ready within {timeout:.0f} s (last probe: {reason}); "
                          f"stopped it\n{log_tail(directory)}")


def stop_broker(directory: Path, timeout: float) -> int | None:
    """SIGTERM (controlled shutdown), then SIGKILL after `timeout` s. Returns the pid stopped, or None."""
    pid = broker_pid(directory)
    if pid is None:
        (directory / "broker.pid").unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, timeout):
        log(f"pid {pid} still alive {timeout:.0f} s after SIGTERM: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_gone(pid, 10):
            raise KafkaLocalError(f"pid {pid} survived SIGKILL")
    (directory / "broker.pid").unlink(missing_ok=True)
    return pid


def cmd_stop(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    started = time.monotonic()
    pid = stop_broker(directory, args.timeout)
    if pid is None:
        log(f"no broker running from {directory}")
    else:
        log(f"stopped pid {pid} in {time.monotonic() - started:.1f} s")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    pid = broker_pid(directory)
    settings = load_settings(directory)
    if pid is None or settings is None:
        print(f"not running ({directory})")
        return 3
    reason = probe(settings.port)
    state = "ready" if reason is None else f"not answering: {reason}"
    sasl = f" sasl_bootstrap={settings.sasl_bootstrap}" if settings.sasl_bootstrap else ""
    print(f"running pid={pid} bootstrap={settings.bootstrap}{sasl} version={settings.version} {state}")
    return 0 if reason is None else 1


def cmd_run(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    rt, settings = prepare(directory, args.kafka_version, args.port, args.sasl)
    (directory / "broker.pid").write_text(f"{os.getpid()}\n")  # exec keeps the pid
    sasl = f", SASL_PLAINTEXT on {settings.sasl_bootstrap}" if settings.sasl_bootstrap else ""
    log(f"running Apache Kafka {settings.version} in the foreground on {settings.bootstrap}{sasl} (Ctrl-C stops)")
    cmd = rt.command(directory, [MAIN_CLASS, str(directory / "server.properties")], console=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(rt.java.path, cmd)
    return 0  # not reached


def start_watchdog(directory: Path, broker: int, owner: int) -> None:
    # A tiny detached process that stops the broker when its owner (e.g. the pytest process) dies without
    # cleaning up: a killed CI job must not leave a 512 MB JVM behind.
    cmd = [sys.executable, str(Path(__file__).resolve()), "_watch", "--dir", str(directory),
           "--broker-pid", str(broker), "--owner-pid", str(owner)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    proc.returncode = 0


def cmd_watch(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    while pid_alive(args.broker_pid):
        if not pid_alive(args.owner_pid):
            if read_pid(directory) == args.broker_pid:
                stop_broker(directory, 30)
            return 0
        time.sleep(1)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-local", description="Single-node Apache Kafka (KRaft) broker from Maven Central jars.")
    parser.add_argument("--kafka-version", default=os.environ.get("STREAMRNN_KAFKA_VERSION", DEFAULT_KAFKA_VERSION),
                        help="Apache Kafka version (default %(default)s; env STREAMRNN_KAFKA_VERSION)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fetch,start,stop,status,run}")
    fetch_cmd = sub.add_parser("fetch", help="fetch the broker jars into the cache (once), build the class-data "
                               "archive (once per Java), print the jars' directory")
    fetch_cmd.add_argument("--no-archive", action="store_true", help="only the jars")
    for name, text in (("start", "start a broker in the background and wait until it is ready"),
                       ("run", "run a broker in the foreground (logs on the console)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--dir", required=True, help="broker directory (config, data, logs, pid)")
        cmd.add_argument("--port", type=int, help="PLAINTEXT port (default: a free one)")
        cmd.add_argument("--sasl", action="store_true",
                         help="add a SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256)")
        if name == "start":
            cmd.add_argument("--timeout", type=float, default=90.0, help="readiness timeout in s (default 90)")
            cmd.add_argument("--owner-pid", type=int, help="stop the broker when this process exits")
    stop = sub.add_parser("stop", help="stop the broker of DIR (SIGTERM, then SIGKILL)")
    stop.add_argument("--dir", required=True)
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL")
    status = sub.add_parser("status", help="exit 0 if the broker of DIR runs and answers, 3 if not running")
    status.add_argument("--dir", required=True)
    watch = sub.add_parser("_watch")  # internal: the watchdog behind --owner-pid
    watch.add_argument("--dir", required=True)
    watch.add_argument("--broker-pid", type=int, required=True)
    watch.add_argument("--owner-pid", type=int, required=True)
    return parser


COMMANDS = {"fetch": cmd_fetch, "start": cmd_start, "stop": cmd_stop, "status": cmd_status, "run": cmd_run,
            "_watch": cmd_watch}


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 11):
        print("kafka-local: needs Python >= 3.11", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KafkaLocalError as exc:
        print(f"kafka-local: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("kafka-local: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
