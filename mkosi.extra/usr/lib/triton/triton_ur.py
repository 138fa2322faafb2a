#!/usr/bin/python3 -I
"""triton-ur-agent: the node's ur agent. The headnode learns through it
that the node exists, and sets the node up through it: it connects to the
headnode's RabbitMQ, announces the node with its sysinfo, and runs the
scripts the headnode sends, as root (triton-ur-agent.service). The protocol
is Triton's (its Linux ur-agent's, as CNAPI, sdcadm and sdc-oneachnode
speak it); shared/research/ur-protocol.md has it with its sources.

- The broker: `rabbitmq=<login>:<password>:<host>:<port>` on the kernel
  command line (booter puts it there), else node.config's `rabbitmq`;
  AMQP_HOST, AMQP_PORT, AMQP_LOGIN, AMQP_PASSWORD, AMQP_VHOST in the
  environment win, field by field; defaults localhost:5672, guest/guest,
  vhost /. AMQP 0-9-1, plain TCP, heartbeat 30 s.
- Everything goes through `amq.topic` (never declared), JSON bodies with
  content type application/json. At every connect: `ur.sysinfo.<UUID>.<hex>`;
  then the request queue `ur.request.<UUID>.<adminMAC>` (exclusive,
  auto-delete) bound to `ur.execute.<UUID>-<adminMAC>.*`,
  `ur.execute.<UUID>.*` and `ur.broadcast.*.*`, and `ur.ping.<UUID>`
  (auto-delete) bound to itself, both consumed with acks, prefetch 1; then,
  once per boot, `ur.startup.<UUID>`. The once-per-boot marker is
  /run/triton/ur-startup (upstream: /tmp/.ur-startup): /run is a fresh
  tmpfs at every boot whatever the unit's or the host's /tmp is.
- While the node is not set up (joysetup.sh's setup-state file, the one
  sysinfo reads for `Setup`, lacks `complete: true`) the sysinfo is sent
  again every 60 s; once it is complete, once more, then no longer. A file
  that cannot be read or is not JSON counts as not set up (logged once).
- The node: sysinfo's UUID (SmartOS byte order) and admin NIC (the
  `Network Interfaces` entry whose `NIC Names` holds the `Admin NIC Tag`,
  default admin); without one, the NIC the node booted from (BOOTIF), else
  the only or first NIC, and the log says which. Sysinfo is
  triton_sysinfo's, run in this process.
- Requests: `{type: "script", script, args, env}` and `{type: "file",
  file, args, env}`, run by triton_urexec (no shell; `env`, when given, is
  the whole environment; 5 MiB of stdout and of stderr). The reply, on
  `ur.execute-reply.<UUID>.<reqid>` (reqid: the routing key's 4th word), is
  `{exit_status, stdout, stderr}`. Exit 113 replies 0, then after 1 s the
  agent disconnects and reboots the node (`systemctl reboot`, or
  TRITON_UR_REBOOT_COMMAND; still up 5 minutes later, it reconnects).
  Requests run side by side, each in a thread: a long script holds up no
  ping or other request; only the main thread touches the connection.
  `ur.broadcast.sysinfo.<reqid>` is answered with the sysinfo on that
  reply key; other broadcasts are logged. A ping `{client_id, id}` is
  answered with `{req_id, timestamp}` on `ur.ack<client_id>.<UUID>`.
- Where it differs from Triton's agent, on purpose. A program that cannot
  be started (no #! line: ENOEXEC; not executable; missing) replies exit
  status 126 (127 when missing), as a shell would, with the error code's
  name and what to do in stderr; Triton's puts the name ("ENOEXEC") in
  exit_status, where clients expect a number. A request that cannot be
  read (not JSON, not an object, an unknown type, a missing or mistyped
  field) gets exit status 1 with the reason in stderr when it came with a
  reply key (a ping has none: logged); Triton's logs an unknown type
  without a reply, and its client waits for its timeout.
- Never in the way of a boot: no broker, a late one, a restart, refused
  credentials, an exclusive queue still held by a dead connection, a
  sysinfo without UUID: the agent retries, waiting 1 s, doubling to 30 s,
  and logs each reason once until it changes or a connection succeeds.
  It never exits on its own.

The AMQP client is Debian's python3-pika (not python3-amqp): pure Python
with no dependencies (py-amqp needs python3-vine), its BlockingConnection
keeps the heartbeats and timers itself while we wait for messages, and
add_callback_threadsafe lets the threads that run scripts hand their
replies to the one thread that owns the connection (pika connections, like
py-amqp's, are not thread-safe). py-amqp leaves heartbeats to the caller
(heartbeat_tick) and has no such hand-over.

  triton_ur.py [--sysinfo-command CMD] [--setup-state FILE]
               [--sysinfo-period SECONDS] [--startup-marker FILE]
               [--cmdline FILE]
The options are for tests; the unit passes none.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import pika
import pika.exceptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_network as tn  # noqa: E402
import triton_sysinfo as si  # noqa: E402
from triton_nodeconfig import parse_node_config  # noqa: E402
from triton_urexec import CANNOT_EXECUTE, Result, run_program, run_script  # noqa: E402

PROG = "triton-ur-agent"
LOG = logging.getLogger(PROG)

EXCHANGE = "amq.topic"
CONTENT_TYPE = "application/json"
HEARTBEAT = 30                       # seconds, as Triton's agent
SYSINFO_PERIOD = 60.0                # seconds between announcements until set up
REBOOT_DELAY = 1.0                   # the reply goes out first
REBOOT_COMMAND = ("systemctl", "reboot")
REBOOT_GRACE = 300.0                 # still up after this: reconnect, say so
BACKOFF_FIRST, BACKOFF_MOST = 1.0, 30.0
STARTUP_MARKER = Path("/run/triton/ur-startup")
CMDLINE = Path("/proc/cmdline")
BAD_REQUEST = 1                      # the exit status of a request that could not be parsed


class Failure(Exception):
    """Why the agent cannot be connected now; it retries."""


# ---- The broker (pure)

@dataclasses.dataclass(frozen=True)
class Broker:
    host: str = "localhost"
    port: int = 5672
    login: str = "guest"
    password: str = dataclasses.field(default="guest", repr=False)
    vhost: str = "/"
    source: str = "defaults"

    def __str__(self) -> str:
        vhost = "" if self.vhost == "/" else f" vhost {self.vhost}"
        return f"{self.login}@{self.host}:{self.port}{vhost} ({self.source})"


def parse_rabbitmq(value: str) -> tuple[str, str, str, int]:
    """`login:password:host:port` -> its fields. The password may hold ':'
    (the host cannot: no IPv6 literal, as upstream). The message of the
    ValueError never holds the password."""
    fields = value.strip().split(":")
    if len(fields) < 4:
        raise ValueError(f"has {len(fields)} ':'-separated fields, not login:password:host:port")
    login, password, host, port = fields[0], ":".join(fields[1:-2]), fields[-2], fields[-1]
    if not login or not host:
        raise ValueError("has an empty login or host (login:password:host:port)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"has port {port!r}, not a port number (login:password:host:port)")
    return login, password, host, int(port)


def broker_from(cmdline: str, node_config: Optional[si.File], env: Mapping[str, str]) -> tuple[Broker, list[str]]:
    """The broker, and the problems met finding it: the kernel command
    line's rabbitmq=, else node.config's, else the defaults; then the
    AMQP_* environment variables, each replacing its field."""
    problems: list[str] = []
    broker = Broker()
    sources: list[tuple[str, Optional[str]]] = [("kernel command line", si.assignments(cmdline).get("rabbitmq"))]
    if node_config is not None and node_config.text is not None:
        sources.append((node_config.path, parse_node_config(node_config.text)[0].get("rabbitmq")))
    for where, value in sources:
        if value is None:
            continue
        try:
            login, password, host, port = parse_rabbitmq(value)
        except ValueError as e:
            problems.append(f"rabbitmq= on the {where} {e}; ignored" if where.startswith("kernel")
                            else f"{where}: rabbitmq {e}; ignored")
            continue
        broker = Broker(host, port, login, password, "/", where)
        break
    changes: dict[str, Any] = {}
    for field in ("host", "port", "login", "password", "vhost"):
        value = env.get(f"AMQP_{field.upper()}", "")
        if field == "port" and value and not (value.isdigit() and 0 < int(value) < 65536):
            problems.append(f"AMQP_PORT={value!r} is not a port number; ignored")
        elif value:
            changes[field] = int(value) if field == "port" else value
    if changes:
        names = ", ".join(f"AMQP_{k.upper()}" for k in changes)
        source = names if broker.source == "defaults" else f"{broker.source}, {names}"
        broker = dataclasses.replace(broker, **changes, source=source)
    return broker, problems


# ---- Who this node is (pure)

@dataclasses.dataclass(frozen=True)
class Identity:
    uuid: str
    mac: str          # the admin NIC's MAC address
    nic: str          # how it was found, for the log


def admin_nic(sysinfo: Mapping[str, Any]) -> tuple[str, str]:
    """(MAC, how it was chosen): the `Network Interfaces` entry whose `NIC
    Names` holds the `Admin NIC Tag` (default "admin"), as Triton's agents
    find it; else the NIC the node booted from (BOOTIF, sysinfo's `Boot
    Params`.admin_mac), else the only NIC, else the first by name."""
    tag = sysinfo.get("Admin NIC Tag") or "admin"
    nics = sysinfo.get("Network Interfaces")
    nics = {str(k): v for k, v in nics.items() if isinstance(v, dict)} if isinstance(nics, dict) else {}
    macs = {name: tn.normal_mac(nic.get("MAC Address")) for name, nic in sorted(nics.items())}
    for name, nic in sorted(nics.items()):
        names = nic.get("NIC Names")
        if isinstance(names, list) and tag in names and macs[name]:
            return str(macs[name]), f"{name}, NIC tag {tag}"
    params = sysinfo.get("Boot Params")
    booted = tn.normal_mac(params.get("admin_mac")) if isinstance(params, dict) else None
    if booted:
        return booted, f"no NIC has NIC tag {tag}: the NIC the node booted from (BOOTIF)"
    known = [(name, mac) for name, mac in macs.items() if mac]
    if len(known) == 1:
        return str(known[0][1]), f"no NIC has NIC tag {tag}: the only NIC, {known[0][0]}"
    if known:
        return str(known[0][1]), f"no NIC has NIC tag {tag} and none was booted from: the first NIC, {known[0][0]}"
    raise Failure(f"sysinfo lists no NIC with a MAC address (no NIC tag {tag}, no BOOTIF)")


def identity(sysinfo: Mapping[str, Any]) -> Identity:
    uuid = sysinfo.get("UUID")
    if not isinstance(uuid, str) or not uuid:
        problems = sysinfo.get("Sysinfo Problems") or []
        why = next((p for p in problems if isinstance(p, str) and "UUID" in p), "no UUID key")
        raise Failure(f"sysinfo has no UUID ({why}): the node cannot be announced")
    mac, how = admin_nic(sysinfo)
    return Identity(uuid, mac, how)


# ---- Routing keys and queues (pure)

def request_queue(ident: Identity) -> str:
    return f"ur.request.{ident.uuid}.{ident.mac}"


def request_bindings(ident: Identity) -> tuple[str, ...]:
    return (f"ur.execute.{ident.uuid}-{ident.mac}.*", f"ur.execute.{ident.uuid}.*", "ur.broadcast.*.*")


def ping_queue(uuid: str) -> str:
    return f"ur.ping.{uuid}"


def sysinfo_key(uuid: str, tag: str) -> str:
    return f"ur.sysinfo.{uuid}.{tag}"


def startup_key(uuid: str) -> str:
    return f"ur.startup.{uuid}"


def reply_key(uuid: str, reqid: str) -> str:
    return f"ur.execute-reply.{uuid}.{reqid}"


def ack_key(client_id: str, uuid: str) -> str:
    return f"ur.ack{client_id}.{uuid}"


def timestamp(now: Optional[float] = None) -> str:
    """ISO 8601 in UTC with milliseconds, as JavaScript's toISOString()."""
    t = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- Requests (pure)

@dataclasses.dataclass(frozen=True)
class Execute:
    reqid: str
    kind: str                              # "script" or "file"
    program: str                           # the script's text, or the file's path
    args: tuple[str, ...] = ()
    env: Optional[dict[str, str]] = None   # None: the agent's own environment


@dataclasses.dataclass(frozen=True)
class SysinfoRequest:
    reqid: str


@dataclasses.dataclass(frozen=True)
class BadRequest:
    reqid: str
    why: str


@dataclasses.dataclass(frozen=True)
class Ignored:
    why: str


@dataclasses.dataclass(frozen=True)
class Ping:
    client_id: str
    id: Any


Request = Union[Execute, SysinfoRequest, BadRequest, Ignored]


def _text(value: Any) -> Optional[str]:
    """A JSON string or number as the text Node.js would pass (String(v))."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return None


def parse_execute(reqid: str, body: bytes) -> Union[Execute, BadRequest]:
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError) as e:
        return BadRequest(reqid, f"the body is not JSON ({type(e).__name__}: {e})")
    if not isinstance(msg, dict):
        return BadRequest(reqid, f"the body is JSON {type(msg).__name__}, not an object")
    kind = msg.get("type")
    if kind not in ("script", "file"):
        return BadRequest(reqid, f"type {kind!r} is neither 'script' nor 'file'")
    program = msg.get(kind)
    if not isinstance(program, str) or not program:
        return BadRequest(reqid, f"a {kind} request needs '{kind}', a non-empty string")
    if "\0" in program:
        return BadRequest(reqid, f"'{kind}' holds a NUL character")
    raw_args = msg.get("args")
    if raw_args is None:
        raw_args = []
    args = [_text(a) for a in raw_args] if isinstance(raw_args, list) else None
    if args is None or any(a is None or "\0" in a for a in args):
        return BadRequest(reqid, "'args' is not a list of strings")
    raw_env = msg.get("env")
    env: Optional[dict[str, str]] = None
    if raw_env is not None:
        if not isinstance(raw_env, dict):
            return BadRequest(reqid, "'env' is not an object")
        env = {}
        for k, v in raw_env.items():
            text = _text(v)
            if text is None or not k or "=" in k or "\0" in k or "\0" in text:
                return BadRequest(reqid, f"'env' entry {k!r} is not a NAME: string pair")
            env[k] = text
    return Execute(reqid, kind, program, tuple(a for a in args if a is not None), env)


def parse_request(routing_key: str, body: bytes) -> Request:
    """A message from the request queue: `ur.execute.<node>.<reqid>` or
    `ur.broadcast.<what>.<reqid>` (the bindings let no other key in)."""
    words = routing_key.split(".")
    if len(words) != 4 or words[0] != "ur" or not words[3]:
        return Ignored(f"routing key {routing_key!r} is not ur.<kind>.<node>.<reqid>")
    kind, what, reqid = words[1], words[2], words[3]
    if kind == "execute":
        return parse_execute(reqid, body)
    if kind == "broadcast":
        if what == "sysinfo":
            return SysinfoRequest(reqid)
        return Ignored(f"broadcast {what!r} ({routing_key}): only 'sysinfo' is known")
    return Ignored(f"routing key {routing_key!r}: unknown kind {kind!r}")


def parse_ping(body: bytes) -> Union[Ping, Ignored]:
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError) as e:
        return Ignored(f"ping: the body is not JSON ({type(e).__name__}: {e})")
    if not isinstance(msg, dict):
        return Ignored(f"ping: the body is JSON {type(msg).__name__}, not an object")
    client = _text(msg.get("client_id"))
    if not client or isinstance(msg.get("client_id"), bool) or "id" not in msg:
        return Ignored("ping: needs 'client_id' (a string) and 'id'")
    return Ping(client, msg["id"])


# ---- Running a request (triton_urexec)

def bad_request(why: str) -> Result:
    return Result(BAD_REQUEST, "", f"ur: bad request, nothing was run: {why}\n")


def run_execute(req: Execute) -> Result:
    if req.kind == "file":
        return run_program([req.program, *req.args], req.env, what=req.program)
    return run_script(req.program, req.args, req.env)


# ---- Setup state, sysinfo, logging

def setup_complete(path: Path) -> tuple[bool, list[str]]:
    """Whether Triton's setup completed (`complete: true` in its setup-state
    file, read as sysinfo reads it for `Setup`), and why not if the file is
    unreadable or malformed (a missing file is simply not set up)."""
    problems: list[str] = []
    return si.setup_value(si.read_file(path), problems) == "true", problems


def sysinfo_of_node() -> dict[str, Any]:
    return si.describe(si.gather())


def sysinfo_from_command(argv: Sequence[str]) -> dict[str, Any]:
    try:
        res = subprocess.run(list(argv), capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Failure(f"sysinfo command {shlex.join(argv)} failed: {e}") from None
    try:
        info = json.loads(res.stdout) if res.returncode == 0 else None
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise Failure(f"sysinfo command {shlex.join(argv)} gave no JSON object (exit {res.returncode}: "
                      f"{res.stderr.decode(errors='replace').strip()[-200:]})")
    return info


class Reporter:
    """Logs each condition once, until it changes or is cleared."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.current: dict[str, str] = {}
        self.lock = threading.Lock()

    def report(self, topic: str, message: str) -> None:
        with self.lock:
            if self.current.get(topic) == message:
                return
            self.current[topic] = message
        self.log(message)

    def clear(self, topic: str) -> None:
        with self.lock:
            self.current.pop(topic, None)


class Backoff:
    """1 s, 2 s, 4 s, ... up to 30 s."""

    def __init__(self, first: float = BACKOFF_FIRST, most: float = BACKOFF_MOST):
        self.first, self.most, self.delay = first, most, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self.delay = self.first


def amqp_error(e: BaseException) -> str:
    """An AMQP or socket failure in words that stay the same at every retry."""
    if isinstance(e, pika.exceptions.ProbableAuthenticationError):
        return f"the broker refused the login (wrong login or password?): {e}"
    if isinstance(e, pika.exceptions.ProbableAccessDeniedError):
        return f"the broker refused access to the vhost: {e}"
    if isinstance(e, pika.exceptions.ConnectionClosedByBroker):
        return f"the broker closed the connection: ({e.reply_code}) {e.reply_text}"
    if isinstance(e, pika.exceptions.ChannelClosedByBroker):
        return f"the broker refused: ({e.reply_code}) {e.reply_text}"
    if isinstance(e, OSError):
        return e.strerror or str(e) or type(e).__name__
    if isinstance(e, pika.exceptions.AMQPConnectionError) and e.args:
        inner = e.args[0]     # pika's connection workflow wraps the cause (.exception)
        cause = getattr(inner, "exception", None)
        if isinstance(cause, BaseException) or isinstance(inner, BaseException):
            return amqp_error(cause if isinstance(cause, BaseException) else inner)
        return str(inner)
    return f"{type(e).__name__}: {e}" if str(e) else repr(e)


# ---- The agent

@dataclasses.dataclass(frozen=True)
class Settings:
    sysinfo_command: Optional[tuple[str, ...]] = None   # None: sysinfo in this process
    setup_state: Optional[Path] = None                  # None: sysinfo's
    sysinfo_period: float = SYSINFO_PERIOD
    startup_marker: Path = STARTUP_MARKER
    cmdline: Path = CMDLINE
    reboot_command: tuple[str, ...] = REBOOT_COMMAND
    reboot_grace: float = REBOOT_GRACE


class Agent:
    """One connection at a time, used by the main thread only; requests run
    in threads of their own, whose replies wait in the outbox until the main
    thread publishes them (woken through add_callback_threadsafe)."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = LOG.info):
        self.settings = settings
        self.log = log
        self.reporter = Reporter(log)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.outbox: list[tuple[str, dict[str, Any]]] = []
        self.conn: Any = None
        self.channel: Any = None
        self.ident: Optional[Identity] = None
        self.reboot_at: Optional[float] = None
        self.announcing = False
        self.setup_announced = False
        self.next_announce = 0.0

    # -- what the threads share

    def send(self, key: str, body: dict[str, Any]) -> None:
        """Queue a message (from any thread); kept across a reconnect."""
        with self.lock:
            self.outbox.append((key, body))
            del self.outbox[:-100]
            conn = self.conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(self.flush)
            except Exception:  # noqa: BLE001 - closed meanwhile: the next connection sends it
                pass

    def flush(self) -> None:
        """Publish the outbox (main thread, connection open)."""
        while True:
            with self.lock:
                if not self.outbox or self.channel is None:
                    return
                key, body = self.outbox[0]
            self.publish(key, body)
            with self.lock:
                self.outbox.pop(0)

    def publish(self, key: str, body: dict[str, Any]) -> None:
        self.channel.basic_publish(exchange=EXCHANGE, routing_key=key, body=json.dumps(body).encode(),
                                   properties=pika.BasicProperties(content_type=CONTENT_TYPE))

    def sysinfo(self) -> dict[str, Any]:
        if self.settings.sysinfo_command:
            return sysinfo_from_command(self.settings.sysinfo_command)
        try:
            return sysinfo_of_node()
        except Exception as e:  # noqa: BLE001 - sysinfo guards its parts; anything else is retried
            raise Failure(f"sysinfo failed: {type(e).__name__}: {e}") from None

    def setup_state(self) -> Path:
        return self.settings.setup_state or si.setup_state_path()

    def is_set_up(self) -> bool:
        done, problems = setup_complete(self.setup_state())
        if problems:
            self.reporter.report("setup-state", "; ".join(problems))
        else:
            self.reporter.clear("setup-state")
        return done

    def thread(self, target: Callable[[], None], name: str) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()

    # -- requests (main thread: the connection's callbacks)

    def on_request(self, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        channel.basic_ack(delivery_tag=method.delivery_tag)
        req = parse_request(method.routing_key, body)
        assert self.ident is not None
        if isinstance(req, Execute):
            what = f"{len(req.program)}-byte script" if req.kind == "script" else req.program
            self.log(f"request {req.reqid}: {what}, {len(req.args)} argument(s)")
            self.thread(functools.partial(self.execute, req), f"execute {req.reqid}")
        elif isinstance(req, SysinfoRequest):
            self.thread(functools.partial(self.answer_sysinfo, req.reqid), f"sysinfo {req.reqid}")
        elif isinstance(req, BadRequest):
            self.log(f"request {req.reqid}: bad request, error reply sent: {req.why}")
            self.send(reply_key(self.ident.uuid, req.reqid), bad_request(req.why).reply())
        else:
            self.log(f"message ignored: {req.why}")

    def on_ping(self, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        channel.basic_ack(delivery_tag=method.delivery_tag)
        ping = parse_ping(body)
        assert self.ident is not None
        if isinstance(ping, Ping):
            self.send(ack_key(ping.client_id, self.ident.uuid), {"req_id": ping.id, "timestamp": timestamp()})
        else:
            self.log(f"message ignored: {ping.why}")

    # -- requests (their own threads)

    def execute(self, req: Execute) -> None:
        assert self.ident is not None
        uuid = self.ident.uuid
        start = time.monotonic()
        try:
            result = run_execute(req)
        except Exception as e:  # noqa: BLE001 - the client gets an answer whatever happened
            result = Result(CANNOT_EXECUTE, "", f"ur: {type(e).__name__}: {e}\n")
        self.log(f"request {req.reqid}: exit status {result.exit_status} after {time.monotonic() - start:.1f} s"
                 + (" (113: rebooting the node)" if result.reboot else ""))
        self.send(reply_key(uuid, req.reqid), result.reply())
        if result.reboot:
            with self.lock:
                self.reboot_at = time.monotonic() + REBOOT_DELAY
            self.send_wakeup()

    def send_wakeup(self) -> None:
        with self.lock:
            conn = self.conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: None)
            except Exception:  # noqa: BLE001
                pass

    def answer_sysinfo(self, reqid: str) -> None:
        assert self.ident is not None
        uuid = self.ident.uuid
        try:
            self.send(reply_key(uuid, reqid), self.sysinfo())
        except Failure as e:
            self.log(f"broadcast sysinfo {reqid}: not answered: {e}")

    def announce(self) -> None:
        """The periodic sysinfo, until set up; then once more."""
        assert self.ident is not None
        uuid = self.ident.uuid
        try:
            done = self.is_set_up()
            if done and self.setup_announced:
                return
            self.send(sysinfo_key(uuid, secrets.token_hex(4)), self.sysinfo())
            self.reporter.clear("announce")
            if done:
                self.setup_announced = True
                self.log("the node is set up: its sysinfo was sent once more; no more periodic announcements")
        except Failure as e:
            self.reporter.report("announce", f"periodic sysinfo not sent: {e}")
        finally:
            with self.lock:
                self.announcing = False

    # -- the connection

    def broker(self) -> Broker:
        try:
            cmdline = self.settings.cmdline.read_text(errors="replace")
        except OSError:
            cmdline = ""
        broker, problems = broker_from(cmdline, si.first_file(si.NODE_CONFIGS), os.environ)
        if problems:
            self.reporter.report("broker", "; ".join(problems) + f"; the broker is {broker}")
        else:
            self.reporter.clear("broker")
        return broker

    def session(self, backoff: Backoff) -> None:
        """Connect, announce, listen until the connection ends (raises), the
        agent stops, or a reboot is due (returns)."""
        info = self.sysinfo()
        ident = identity(info)
        broker = self.broker()
        self.ident = ident
        params = pika.ConnectionParameters(
            host=broker.host, port=broker.port, virtual_host=broker.vhost,
            credentials=pika.PlainCredentials(broker.login, broker.password, erase_on_connect=False),
            heartbeat=HEARTBEAT, connection_attempts=1, socket_timeout=10, stack_timeout=30,
            blocked_connection_timeout=300, client_properties={"connection_name": f"ur-agent {ident.uuid}"})
        try:
            conn = pika.BlockingConnection(params)
        except Exception as e:  # noqa: BLE001 - whatever the cause, retried
            raise Failure(f"cannot connect to the broker {broker}: {amqp_error(e)}") from None
        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=1)
            self.channel = channel
            self.publish(sysinfo_key(ident.uuid, secrets.token_hex(4)), info)
            if self.is_set_up():
                self.setup_announced = True
            queue = request_queue(ident)
            channel.queue_declare(queue=queue, exclusive=True, auto_delete=True)
            for key in request_bindings(ident):
                channel.queue_bind(queue=queue, exchange=EXCHANGE, routing_key=key)
            channel.queue_declare(queue=ping_queue(ident.uuid), auto_delete=True)
            channel.queue_bind(queue=ping_queue(ident.uuid), exchange=EXCHANGE, routing_key=ping_queue(ident.uuid))
            channel.basic_consume(queue=queue, on_message_callback=self.on_request)
            channel.basic_consume(queue=ping_queue(ident.uuid), on_message_callback=self.on_ping)
            self.startup(ident, info)
            self.reporter.clear("connection")
            self.log(f"connected to {broker} as node {ident.uuid}, admin NIC {ident.mac} ({ident.nic})")
            backoff.reset()
            with self.lock:
                self.conn = conn
            self.flush()
            self.next_announce = time.monotonic() + self.settings.sysinfo_period
            self.listen(conn)
        except pika.exceptions.AMQPError as e:
            raise Failure(f"connection to the broker {broker} ended: {amqp_error(e)}") from None
        finally:
            with self.lock:
                self.conn = None
                self.channel = None
            try:
                if conn.is_open:
                    conn.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                pass

    def startup(self, ident: Identity, info: dict[str, Any]) -> None:
        """`ur.startup` once per boot (the marker lives in /run)."""
        marker = self.settings.startup_marker
        if marker.exists():
            return
        self.publish(startup_key(ident.uuid), info)
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as e:
            self.reporter.report("marker", f"cannot write {marker} ({e.strerror}): "
                                           "ur.startup will be sent again at the next connect")

    def listen(self, conn: Any) -> None:
        while not self.stopping.is_set():
            with self.lock:
                due = self.reboot_at is not None and time.monotonic() >= self.reboot_at
            if due:
                return
            conn.process_data_events(time_limit=1.0)
            self.flush()
            if time.monotonic() >= self.next_announce:
                self.next_announce = time.monotonic() + self.settings.sysinfo_period
                with self.lock:
                    busy, self.announcing = self.announcing, True
                if not busy:
                    self.thread(self.announce, "announce")

    def reboot(self) -> None:
        cmd = self.settings.reboot_command
        self.log(f"rebooting the node: {shlex.join(cmd)}")
        try:
            res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            ok, why = res.returncode == 0, f"exit status {res.returncode}: {res.stderr.strip()[-300:]}"
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, why = False, str(e)
        with self.lock:
            self.reboot_at = None
        if not ok:
            self.log(f"the reboot command failed ({why}); reconnecting")
            return
        if self.stopping.wait(self.settings.reboot_grace):
            return
        self.log(f"the node did not reboot within {self.settings.reboot_grace:.0f} s; reconnecting")

    def run(self) -> int:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                self.session(backoff)
            except Failure as e:
                self.reporter.report("connection", f"{e}; retrying")
            except Exception as e:  # noqa: BLE001 - the agent never exits on its own
                self.reporter.report("connection", f"unexpected {type(e).__name__}: {e}; retrying")
            with self.lock:
                rebooting = self.reboot_at is not None
            if rebooting and not self.stopping.is_set():
                self.stopping.wait(max(0.0, (self.reboot_at or 0) - time.monotonic()))
                self.reboot()
                continue
            self.stopping.wait(backoff.next())
        self.log("stopped")
        return 0


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    p = argparse.ArgumentParser(prog=PROG, description="Triton's ur agent (see the module's docstring).")
    p.add_argument("--sysinfo-command", help="a command printing the sysinfo JSON (default: this node's)")
    p.add_argument("--setup-state", type=Path, help="the setup-state file (default: sysinfo's)")
    p.add_argument("--sysinfo-period", type=float, default=SYSINFO_PERIOD, help="seconds between announcements")
    p.add_argument("--startup-marker", type=Path, default=STARTUP_MARKER, help="once-per-boot ur.startup marker")
    p.add_argument("--cmdline", type=Path, default=CMDLINE, help="the kernel command line to read")
    a = p.parse_args(list(argv))
    reboot = shlex.split(env.get("TRITON_UR_REBOOT_COMMAND", "")) or list(REBOOT_COMMAND)
    return Settings(sysinfo_command=tuple(shlex.split(a.sysinfo_command)) if a.sysinfo_command else None,
                    setup_state=a.setup_state, sysinfo_period=max(a.sysinfo_period, 0.1),
                    startup_marker=a.startup_marker, cmdline=a.cmdline, reboot_command=tuple(reboot))


def main(argv: Optional[Sequence[str]] = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # pika logs every failed attempt with a traceback; ours say it once.
    logging.getLogger("pika").setLevel(logging.CRITICAL + 1)
    agent = Agent(settings)

    def stop(signum: int, _frame: Any) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
