"""A private RabbitMQ for tests, and a headnode's side of ur.

`Broker`: Debian's rabbitmq-server as a private instance (its own
directories, node name, ports on 127.0.0.1, its own epmd;
`channel_max = 0`, the one setting Triton's agents need). A node in QEMU
reaches it at 10.0.2.2:<port> (QEMU's user network connects from
127.0.0.1, so RabbitMQ's loopback-only `guest` user is accepted).

`Headnode`: what CNAPI and urclient do, in a few lines (amq.topic, JSON
bodies, the routing keys of shared/research/ur-protocol.md), written from
the protocol, never calling the agent's code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable, Optional

import pika

RABBITMQ = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
JSON = "application/json"


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A private RabbitMQ that the test can stop and start again."""

    def __init__(self, base: Path):
        self.base = base
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "# Triton's agents (node-amqp 0.1.8) ask for channel_max 0; RabbitMQ >= 3.7.5 refuses that by default.\n"
            "channel_max = 0\n")
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(base),        # its .erlang.cookie
            "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),        # not /etc/rabbitmq's
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
            # A long node name on 127.0.0.1: Erlang's distribution then needs
            # no name for the host (a machine without /etc/hosts has no
            # "localhost", and the broker would not start).
            "RABBITMQ_NODENAME": f"urtest{os.getpid()}@127.0.0.1", "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def url(self) -> str:
        return f"guest:guest:127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.base / "server.log").open("ab") as log:
            self.proc = subprocess.Popen([str(RABBITMQ)], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"rabbitmq-server exited ({self.proc.returncode}):\n"
                                  + (self.base / "server.log").read_text()[-3000:])
            try:
                pika.BlockingConnection(self.params()).close()
                return
            except pika.exceptions.AMQPError:
                time.sleep(0.2)
        raise BrokerError("rabbitmq-server did not accept connections within 60 s:\n"
                          + (self.base / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def params(self) -> Any:
        return pika.ConnectionParameters("127.0.0.1", self.port, connection_attempts=1, socket_timeout=5)

    def close(self) -> None:
        """Stop it for good, and its epmd."""
        self.stop()
        subprocess.run([EPMD, "-port", str(self.epmd_port), "-kill"], capture_output=True, timeout=30)


class Headnode:
    """What CNAPI and urclient do, in a few lines: one exclusive queue bound
    to everything ur sends (as urclient's promiscuous mode), and requests
    published on amq.topic with JSON bodies."""

    def __init__(self, broker: Broker, durable: str = ""):
        # No heartbeats: a test pumps this connection only while it waits for
        # a message, and between waits (a node's reboot, minutes under TCG)
        # the broker would close an idle connection whose heartbeats it
        # missed (CI lost the headnode that way while the node rebooted).
        params = broker.params()
        params.heartbeat = 0
        self.conn = pika.BlockingConnection(params)
        self.ch = self.conn.channel()
        # A durable queue keeps what is sent while the test is not connected
        # (and across a broker restart).
        self.queue = self.ch.queue_declare(queue=durable, exclusive=not durable, durable=bool(durable)).method.queue
        for key in ("ur.sysinfo.#", "ur.startup.#", "ur.execute-reply.#"):
            self.ch.queue_bind(queue=self.queue, exchange="amq.topic", routing_key=key)
        self.seen: list[tuple[str, Any, float]] = []
        self.ch.basic_consume(queue=self.queue, on_message_callback=self._got, auto_ack=True)

    def _got(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        assert props.content_type == JSON, (method.routing_key, props.content_type)
        self.seen.append((method.routing_key, json.loads(body), time.monotonic()))

    def publish(self, key: str, body: Any, raw: Optional[bytes] = None) -> float:
        self.ch.basic_publish("amq.topic", key, raw if raw is not None else json.dumps(body).encode(),
                              pika.BasicProperties(content_type=JSON))
        return time.monotonic()

    def wait(self, pred: Callable[[str, Any], bool], timeout: float = 15, what: str = "") -> tuple[str, Any, float]:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.seen:
                if pred(m[0], m[1]):
                    self.seen.remove(m)
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what or 'message'} within {timeout} s; seen: "
                                     f"{[k for k, _, _ in self.seen][-20:]}")
            self.conn.process_data_events(time_limit=0.1)

    def key(self, key: str, timeout: float = 15) -> Any:
        return self.wait(lambda k, _: k == key, timeout, key)[1]

    def ping(self, node: str, client_id: str, id: Any) -> float:
        """As urclient: its acks come on ur.ack<client_id>.<node>."""
        self.ch.queue_bind(queue=self.queue, exchange="amq.topic", routing_key=f"ur.ack{client_id}.*")
        return self.publish(f"ur.ping.{node}", {"client_id": client_id, "id": id})

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.1)

    def execute(self, node: str, body: Any, raw: Optional[bytes] = None, timeout: float = 15) -> Any:
        reqid = uuidlib.uuid4().hex[:8]
        self.publish(f"ur.execute.{node}.{reqid}", body, raw)
        return self.key(f"ur.execute-reply.{node[:36]}.{reqid}", timeout)

    def close(self) -> None:
        try:
            self.conn.close()
        except pika.exceptions.AMQPError:
            pass
