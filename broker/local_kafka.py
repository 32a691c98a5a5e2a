"""Fetch, start and stop a single-node Kafka broker (broker and controller in one JVM).

The jars come from Maven Central through ``broker/pom.xml`` into
``<home>/libs``; the broker keeps its data, logs and pid file under
``<home>`` (default ``.eddy/kafka`` in the project, git-ignored).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POM = Path(__file__).resolve().parent / "pom.xml"

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=104857600
log.cleaner.dedupe.buffer.size=33554432
"""

_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
"""


def metadata_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Kafka broker at host:port answers a Metadata request with itself in it."""
    client_id = b"eddy-probe"
    # Metadata v0: header (api_key=3, api_version=0, correlation_id, client_id), empty topic list.
    body = struct.pack(">hhih", 3, 0, 7, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
            response = _recv_exactly(sock, size)
    except (OSError, struct.error):
        return False
    correlation_id, broker_count = struct.unpack(">ii", response[:8])
    return correlation_id == 7 and broker_count >= 1


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def _random_cluster_id() -> str:
    """A Kafka cluster id: base64url of a random UUID, never starting with "-".

    Kafka's own ``Uuid.randomUuid`` also avoids the leading dash: command-line
    parsers take ``-t -abc`` for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LocalKafka:
    """A project-local Kafka broker.

    Parameters
    ----------
    home
        Folder for jars, data, logs and the pid file.
    host, port, controller_port
        Where the broker and its KRaft controller listen.
    heap
        JVM heap size, e.g. ``"512m"``.
    """

    home: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"

    @classmethod
    def from_env(cls) -> LocalKafka:
        """Settings from ``EDDY_KAFKA_HOME``, ``KAFKA_PORT``, ``KAFKA_CONTROLLER_PORT``, ``KAFKA_HEAP``."""
        port = int(os.environ.get("KAFKA_PORT", "9092"))
        return cls(
            home=Path(os.environ.get("EDDY_KAFKA_HOME", PROJECT_ROOT / ".eddy" / "kafka")),
            port=port,
            controller_port=int(os.environ.get("KAFKA_CONTROLLER_PORT", str(port + 1))),
            heap=os.environ.get("KAFKA_HEAP", "512m"),
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    def answers(self) -> bool:
        return metadata_answers(self.host, self.port)

    def fetch(self) -> None:
        """Copy the broker's jars from Maven into ``libs`` (skipped when already there)."""
        marker = self.libs / ".complete"
        if marker.exists() and marker.read_text() == POM.read_text():
            return
        self.libs.mkdir(parents=True, exist_ok=True)
        for jar in self.libs.glob("*.jar"):
            jar.unlink()
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs}",
            ],
            check=True,
        )
        marker.write_text(POM.read_text())

    def start(self, timeout: float = 90.0) -> bool:
        """Start the broker unless one answers already; wait until it answers metadata.

        Returns True when this call started it.
        """
        if self.answers():
            return False
        self.fetch()
        config = self._write_config()
        self._format_storage(config)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.home / "logs" / "stdout.log", "ab") as stdout:
            process = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(config)],
                stdout=stdout,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the caller's terminal must not reach the broker
                cwd=self.home,
            )
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"kafka exited with code {process.returncode}; see {self.log_file}")
            if self.answers():
                return True
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"kafka did not answer on {self.bootstrap} within {timeout}s")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker started from this home by its pid; True when one was running."""
        if not self.pid_file.exists():
            return False
        pid = int(self.pid_file.read_text().strip() or 0)
        self.pid_file.unlink()
        if not pid or not _pid_alive(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        return True

    def _java(self) -> list[str]:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else "java"
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp",
            str(self.libs / "*"),
        ]

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(
            _SERVER_PROPERTIES.format(
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.home / "data",
            )
        )
        (self.home / "log4j.properties").write_text(_LOG4J_PROPERTIES.format(log_file=self.log_file))
        return config

    def _format_storage(self, config: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = _random_cluster_id()
        subprocess.run(
            [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
                "--ignore-formatted",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def local_kafka() -> Iterator[str]:
    """The local broker's bootstrap address; started for the block (and stopped) if it was down."""
    kafka = LocalKafka.from_env()
    started = kafka.start()
    try:
        yield kafka.bootstrap
    finally:
        if started:
            kafka.stop()
