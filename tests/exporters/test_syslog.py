"""`SyslogExporter` against a real rsyslogd (loopback UDP, TCP and TLS), checked with rsyslog's own
RFC 5424 parser and with a parser written here from the RFC's ABNF (independent of the formatter)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from llmpulse.events import LLMCall, LogEvent, Metric, Orchestration, Span, ToolExecution, to_dict
from llmpulse.exporters._syslog import SyslogExporter, parse_facility
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._exporter import RetryableError
from tests.exporters.rsyslog import Rsyslog, free_port
from tests.sdk.test_pipeline import call

# -- RFC 5424 §6, from the ABNF ------------------------------------------------------------------

_PRINTUSASCII = r"[!-~]"
_SD_NAME = r"[!#-<>-\\^-~]{1,32}"  # PRINTUSASCII except '=', SP, ']', '"'
_PARAM_VALUE = r'(?:[^"\\\]]|\\["\\\]])*'  # '"', '\' and ']' MUST be escaped
_SD_ELEMENT = rf'\[{_SD_NAME}(?: {_SD_NAME}="{_PARAM_VALUE}")*\]'
_SYSLOG_MSG = re.compile(
    rf"<(?P<pri>\d{{1,3}})>(?P<version>[1-9]\d{{0,2}})"
    r" (?P<timestamp>-|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2}))"
    rf" (?P<hostname>{_PRINTUSASCII}{{1,255}}) (?P<app_name>{_PRINTUSASCII}{{1,48}})"
    rf" (?P<procid>{_PRINTUSASCII}{{1,128}}) (?P<msgid>{_PRINTUSASCII}{{1,32}})"
    rf" (?P<sd>-|(?:{_SD_ELEMENT})+)(?: (?P<msg>.*))?\Z",
    re.DOTALL,
)
_ELEMENT = re.compile(rf'\[(?P<id>{_SD_NAME})(?P<params>(?: {_SD_NAME}="{_PARAM_VALUE}")*)\]')
_PARAM = re.compile(rf' (?P<name>{_SD_NAME})="(?P<value>{_PARAM_VALUE})"')
BOM = "\ufeff"


def parse(raw: str | bytes) -> dict[str, Any]:
    """A SYSLOG-MSG split into its fields (SD as ``{sd_id: {name: unescaped value}}``); fails the test
    when `raw` is not RFC 5424."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    match = _SYSLOG_MSG.match(text)
    assert match, f"not RFC 5424: {text!r}"
    fields: dict[str, Any] = match.groupdict()
    assert 0 <= int(fields["pri"]) <= 191
    if fields["timestamp"] != "-":
        fields["time"] = datetime.fromisoformat(fields["timestamp"])
    sd: dict[str, dict[str, str]] = {}
    if fields["sd"] != "-":
        for element in _ELEMENT.finditer(fields["sd"]):
            params = sd.setdefault(element["id"], {})
            for param in _PARAM.finditer(element["params"]):
                params[param["name"]] = re.sub(r'\\(["\\\]])', r"\1", param["value"])
    fields["params"] = sd
    msg = fields["msg"] or ""
    fields["bom"] = msg.startswith(BOM)
    fields["text"] = msg.removeprefix(BOM)
    return fields


def expected_params(item: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """What the docs promise as SD params: every non-null scalar, objects flattened with dots, values
    as in JSON (strings bare), names that are not SD-NAMEs and lists left out."""
    out: dict[str, str] = {}
    for key, value in item.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(expected_params(value, name + "."))
        elif value is None or isinstance(value, list) or not re.fullmatch(_SD_NAME, name):
            continue
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def test_the_abnf_parser_rejects_what_rfc_5424_forbids() -> None:
    good = '<134>1 2025-01-02T03:04:05.123456+01:00 h app 1 id [x@1 a="q\\"b\\\\c\\]"] msg'
    assert parse(good)["params"] == {"x@1": {"a": 'q"b\\c]'}}
    for bad in (
        good.replace("1 2025", "0 2025"),  # version 0
        good.replace(".123456", ".1234567"),  # more than microseconds
        good.replace("+01:00", ""),  # no time zone
        good.replace('\\"b', '"b'),  # an unescaped quote
        good.replace("\\]", "]"),  # an unescaped bracket
        good.replace(' a="', ' a b="'),  # a space in a PARAM-NAME
        good.replace(" id ", " " + "m" * 33 + " "),  # MSGID longer than 32
    ):
        with pytest.raises(AssertionError):
            parse(bad)


# -- the receiver ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    daemon = Rsyslog(tmp_path_factory.mktemp("rsyslog"))
    daemon.start()
    yield daemon
    daemon.stop()


def _port(daemon: Rsyslog, protocol: str) -> int:
    port = {"udp": daemon.udp_port, "tcp": daemon.tcp_port, "tls": daemon.tls_port}[protocol]
    assert port is not None
    return port


def _exporter(daemon: Rsyslog, protocol: str, app_name: str, **kwargs: Any) -> SyslogExporter:
    if protocol == "tls":
        kwargs.setdefault("ssl_context", ssl.create_default_context(cafile=str(daemon.cert)))
    kwargs.setdefault("timeout_s", 2.0)
    return SyslogExporter("127.0.0.1", _port(daemon, protocol), protocol, app_name=app_name, **kwargs)  # type: ignore[arg-type]


TZ = timezone(timedelta(hours=-5))
TRICKY = 'quote " backslash \\ bracket ] end'


def _ok_call() -> LLMCall:
    return LLMCall(
        model="gpt-4o",
        timestamp=datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=TZ),
        input_tokens=1000,
        output_tokens=234,
        cost=0.0123,
        latency_ms=812.0,
        request_id="req-ok",
        provider="openai",
        user_id="u-1",
        feature="chat",
        metadata={"team": TRICKY, "nested": {"depth": 2, "flag": True}, "tags": ["a"], "bad key": 1},
    )


def _failed_call() -> LLMCall:
    return LLMCall(
        model="claude-3-5-sonnet",
        timestamp=datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC),
        input_tokens=50,
        request_id="req-err",
        error={"type": "RateLimitError", "message": "slow [down]"},
    )


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_each_transport_delivers_rfc5424_that_rsyslog_parses(rsyslog: Rsyslog, protocol: str) -> None:
    app = f"fields-{protocol}"
    exporter = _exporter(rsyslog, protocol, app)
    items = [to_dict(_ok_call()), to_dict(_failed_call())]
    exporter.export(items)
    exporter.shutdown(1.0)
    records = rsyslog.wait_for(app, 2)
    assert len(records) == 2
    for item, record, pri in zip(items, records, (134, 131), strict=True):  # local0: info, err
        raw = parse(record["rawmsg"])
        assert record["input"] == protocol
        assert record["version"] == raw["version"] == "1"
        assert int(record["pri"]) == int(raw["pri"]) == pri
        assert datetime.fromisoformat(record["timestamp"]) == raw["time"]
        assert raw["time"] == datetime.fromisoformat(item["timestamp"])
        assert raw["time"].utcoffset() == datetime.fromisoformat(item["timestamp"]).utcoffset()
        assert record["hostname"] == raw["hostname"] == socket.gethostname()
        assert record["app_name"] == raw["app_name"] == app
        assert record["procid"] == raw["procid"] == str(os.getpid())
        assert record["msgid"] == raw["msgid"] == "llm.call"
        assert record["sd"] == raw["sd"]
        assert raw["params"] == {"llmpulse@32473": expected_params(item)}
        assert record["msg"] == raw["msg"]
        assert not raw["bom"]  # an ASCII MSG goes without the byte order mark
    ok, failed = (parse(r["rawmsg"]) for r in records)
    assert ok["text"] == "gpt-4o ok 812ms 1234 tokens $0.0123"
    assert ok["params"]["llmpulse@32473"]["metadata.team"] == TRICKY
    assert ok["params"]["llmpulse@32473"]["metadata.nested.flag"] == "true"
    assert "metadata.tags" not in ok["params"]["llmpulse@32473"]
    assert failed["text"] == "claude-3-5-sonnet error 50 tokens: RateLimitError: slow [down]"
    assert failed["params"]["llmpulse@32473"]["error.message"] == "slow [down]"


def test_json_format_puts_the_item_in_msg_without_structured_data(rsyslog: Rsyslog) -> None:
    exporter = _exporter(rsyslog, "tcp", "json-format", format="json")
    item = to_dict(_ok_call())
    item["metadata"]["city"] = "Zürich ✓"
    exporter.export([item])
    exporter.shutdown(1.0)
    (record,) = rsyslog.wait_for("json-format", 1)
    raw = parse(record["rawmsg"])
    assert record["sd"] == raw["sd"] == "-"
    assert not raw["bom"]
    assert raw["text"].isascii()  # non-ASCII is \u-escaped: no BOM needed, any JSON parser reads it
    assert json.loads(record["msg"]) == item
    assert raw["msgid"] == "llm.call"
    assert int(raw["pri"]) == 134


def test_a_non_ascii_msg_starts_with_the_utf8_bom(rsyslog: Rsyslog) -> None:
    exporter = _exporter(rsyslog, "udp", "bom")
    exporter.export([to_dict(LogEvent(name="greeting", message="grüß dich ✓"))])
    exporter.shutdown(1.0)
    (record,) = rsyslog.wait_for("bom", 1)
    raw = parse(record["rawmsg"])
    assert raw["bom"]
    assert raw["text"] == "greeting: grüß dich ✓"
    assert raw["params"]["llmpulse@32473"]["message"] == "grüß dich ✓"


def test_tcp_frames_by_octet_count_so_a_newline_stays_inside_its_message(rsyslog: Rsyslog) -> None:
    exporter = _exporter(rsyslog, "tcp", "framing")
    items = [to_dict(LogEvent(name="multi", message=f"line {i}\nsecond line")) for i in range(3)]
    exporter.export(items)
    exporter.shutdown(1.0)
    records = rsyslog.wait_for("framing", 3)
    assert len(records) == 3  # LF framing would have split each message in two
    assert [r["msg"] for r in records] == [f"multi: line {i}#012second line" for i in range(3)]


def test_tcp_frames_are_len_sp_msg_exactly() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def read() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    exporter = SyslogExporter("127.0.0.1", server.getsockname()[1], "tcp", timeout_s=2.0)
    items = [to_dict(call(i)) for i in range(3)] + [to_dict(LogEvent(name="é", message="ü"))]
    exporter.export(items)
    exporter.shutdown(1.0)
    reader.join(5.0)
    server.close()
    data, messages = bytes(received), []
    while data:
        length, _, rest = data.partition(b" ")
        assert length.isdigit(), data[:20]
        assert not length.startswith(b"0"), data[:20]
        messages.append(rest[: int(length)])
        data = rest[int(length) :]
    assert messages == exporter.encode(items)
    assert [parse(m)["msgid"] for m in messages] == ["llm.call"] * 3 + ["log"]


# -- the UDP size limit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "fmt"), [(2048, "rfc5424"), (480, "rfc5424"), (2048, "json"), (480, "json")]
)
def test_a_large_item_over_udp_is_cut_to_the_limit_and_still_parses(
    rsyslog: Rsyslog, limit: int, fmt: str
) -> None:
    app = f"big-{fmt}-{limit}"
    exporter = _exporter(rsyslog, "udp", app, format=fmt, max_udp_message_bytes=limit)
    big = LLMCall(
        model="gpt-4o",
        timestamp=datetime.now(UTC),
        input_tokens=7,
        request_id="req-big",
        metadata={f"key{i}": "v" * 60 for i in range(80)},
        error="ü" * 3000,  # multi-byte characters: a cut must not split one
    )
    item = to_dict(big)
    exporter.export([item])
    exporter.shutdown(1.0)
    (record,) = rsyslog.wait_for(app, 1)
    size = len(record["rawmsg"].encode("utf-8"))
    assert size <= limit
    if fmt == "rfc5424":
        assert size >= limit - 8  # cut to the limit, not far below it (JSON loses whole fields)
    assert "\ufffd" not in record["rawmsg"]
    raw = parse(record["rawmsg"])
    assert record["version"] == "1"
    assert record["msgid"] == raw["msgid"] == "llm.call"
    assert int(record["pri"]) == 131
    if fmt == "json":
        assert raw["sd"] == "-"
        kept = json.loads(raw["text"])  # fields were left out, the JSON is whole
        assert kept["type"] == "llm.call"
        assert kept["timestamp"] == item["timestamp"]
        assert {k: item[k] for k in kept} == kept
        assert "metadata" not in kept
    else:
        params = raw["params"].get("llmpulse@32473", {})
        full = expected_params(item)
        assert {k: full[k] for k in params} == params  # what was kept is intact
        assert len(params) < len(full)
        assert raw["bom"]
        summary = "gpt-4o error 7 tokens: " + "ü" * 3000
        assert raw["text"]
        assert summary.startswith(raw["text"])
    stats = exporter.stats()
    assert stats["truncated"] == 1
    assert stats["dropped_sd_params"] == (0 if fmt == "json" else len(expected_params(item)) - len(params))


def test_no_datagram_is_ever_larger_than_the_limit() -> None:
    items = [
        to_dict(call(i, metadata={f"k{j}": "x" * (i * 7 % 90) for j in range(i)}, error="e" * (i * 13)))
        for i in range(40)
    ]
    whole = SyslogExporter(protocol="tcp").encode(items)  # TCP messages are never cut
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2.0)
        exporter = SyslogExporter("127.0.0.1", receiver.getsockname()[1], max_udp_message_bytes=600)
        exporter.export(items)
        sent = [receiver.recv(65536) for _ in items]
    exporter.shutdown(1.0)
    assert max(len(d) for d in sent) == 600
    too_big = [i for i, m in enumerate(whole) if len(m) > 600]
    assert 0 < len(too_big) < len(items)
    assert [d for i, d in enumerate(sent) if i not in too_big] == [
        m for i, m in enumerate(whole) if i not in too_big
    ]
    for i in too_big:
        assert parse(sent[i])["msgid"] == "llm.call"
    assert exporter.stats()["truncated"] == len(too_big)


# -- PRI: facility and severity -------------------------------------------------------------------


@pytest.mark.parametrize(("facility", "number"), [("local3", 19), (19, 19), ("auth", 4), (4, 4), ("KERN", 0)])
def test_facility_by_name_and_by_number(rsyslog: Rsyslog, facility: str | int, number: int) -> None:
    app = f"facility-{facility}"
    exporter = _exporter(rsyslog, "udp", app, facility=facility)
    exporter.export([to_dict(call()), to_dict(call(error="boom"))])
    exporter.shutdown(1.0)
    records = rsyslog.wait_for(app, 2)
    assert [int(r["pri"]) for r in records] == [number * 8 + 6, number * 8 + 3]


def test_severity_follows_each_kind_of_item(rsyslog: Rsyslog) -> None:
    now = datetime.now(UTC)
    cases: list[tuple[Any, int, str]] = [
        (call(), 6, "llm.call"),
        (call(status="cancelled"), 3, "llm.call"),
        (call(error="timeout"), 3, "llm.call"),
        (Span(name="ok"), 6, "span"),
        (Span(name="bad", status="error"), 3, "span"),
        (ToolExecution(name="search", error="404"), 3, "tool"),
        (Orchestration(name="plan", status="cancelled"), 3, "orchestration"),
        (Orchestration(name="plan"), 6, "orchestration"),
        (Metric(name="queue.depth", value=3.0, timestamp=now), 6, "metric"),
        (LogEvent(name="d", severity="debug"), 7, "log"),
        (LogEvent(name="w", severity="warning"), 4, "log"),
        (LogEvent(name="e", severity="error"), 3, "log"),
        (LogEvent(name="c", severity="critical"), 2, "log"),
    ]
    exporter = _exporter(rsyslog, "udp", "severity", facility="user")
    exporter.export([to_dict(item) for item, _, _ in cases])
    exporter.shutdown(1.0)
    records = rsyslog.wait_for("severity", len(cases))
    assert [(int(r["pri"]) - 8, r["msgid"]) for r in records] == [(sev, kind) for _, sev, kind in cases]
    assert [parse(r["rawmsg"])["text"] for r in records][8:10] == ["queue.depth 3 (gauge)", "d"]


# -- through a collector --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_collector_delivers_every_call_and_accounts_for_it(rsyslog: Rsyslog, protocol: str) -> None:
    app = f"collector-{protocol}"
    exporter = _exporter(rsyslog, protocol, app)
    collector = Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[exporter])
    calls = 40
    for i in range(calls):
        collector.record(call(i))
    assert collector.shutdown(timeout=5.0)
    records = rsyslog.wait_for(app, calls)
    ids = sorted(parse(r["rawmsg"])["params"]["llmpulse@32473"]["request_id"] for r in records)
    assert ids == sorted(f"r{i}" for i in range(calls))
    stats = collector.stats()["exporters"]["syslog"]
    assert stats["emitted"] == stats["exported"] + stats["queued"] + stats["dropped"]
    assert (stats["emitted"], stats["exported"], stats["dropped"]) == (calls, calls, 0)


# -- connections and failures ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
def test_a_receiver_restart_between_batches_loses_nothing(tmp_path: Path, protocol: str) -> None:
    daemon = Rsyslog(tmp_path, udp=False, tcp=protocol == "tcp", tls=protocol == "tls")
    daemon.start()
    try:
        exporter = _exporter(daemon, protocol, "restart")
        exporter.export([to_dict(call(i)) for i in range(3)])
        assert len(daemon.wait_for("restart", 3)) == 3
        daemon.stop()
        daemon.start()
        exporter.export([to_dict(call(i)) for i in range(3, 6)])  # the idle connection is replaced first
        exporter.shutdown(1.0)
        records = daemon.wait_for("restart", 6)
    finally:
        daemon.stop()
    ids = [parse(r["rawmsg"])["params"]["llmpulse@32473"]["request_id"] for r in records]
    assert ids == [f"r{i}" for i in range(6)]


def test_a_refused_tcp_connection_is_retryable() -> None:
    exporter = SyslogExporter("127.0.0.1", free_port(), "tcp", timeout_s=1.0)
    with pytest.raises(RetryableError, match="ConnectionRefusedError"):
        exporter.export([to_dict(call())])
    exporter.shutdown(1.0)


def test_a_refused_udp_datagram_is_retryable() -> None:
    exporter = SyslogExporter("127.0.0.1", free_port(socket.SOCK_DGRAM), timeout_s=1.0)
    with pytest.raises(RetryableError, match="ConnectionRefusedError"):  # noqa: PT012
        for _ in range(5):  # the ICMP "port unreachable" of one datagram fails a later send
            exporter.export([to_dict(call())])
            time.sleep(0.02)
    exporter.shutdown(1.0)


@contextlib.contextmanager
def _black_hole() -> Iterator[int]:
    """A listener that never accepts: connections complete (the backlog), nothing is ever read."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_black_holed_tls_receiver_fails_within_the_timeout() -> None:
    with _black_hole() as port:
        exporter = SyslogExporter("127.0.0.1", port, "tls", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(RetryableError, match="timed out"):
            exporter.export([to_dict(call())])
        assert time.monotonic() - started < 2.0
        exporter.shutdown(1.0)


def test_a_tcp_receiver_that_stops_reading_fails_within_the_timeout() -> None:
    with _black_hole() as port:
        exporter = SyslogExporter("127.0.0.1", port, "tcp", timeout_s=0.3)
        batch = [to_dict(LogEvent(name="bulk", message="x" * 8000)) for _ in range(2000)]  # 16 MB
        started = time.monotonic()
        with pytest.raises(RetryableError, match="timed out"):
            exporter.export(batch)
        assert time.monotonic() - started < 2.0
        exporter.shutdown(1.0)


def test_a_forked_child_never_writes_on_the_parents_tls_session(rsyslog: Rsyslog) -> None:
    exporter = _exporter(rsyslog, "tls", "fork")
    exporter.export([to_dict(call(0))])
    pid = os.fork()
    if pid == 0:  # the child: its own connection, then leave without running pytest's teardown
        code = 1
        try:
            exporter.export([to_dict(call(1))])
            exporter.shutdown(1.0)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    exporter.export([to_dict(call(2))])  # the parent's session is intact
    exporter.shutdown(1.0)
    records = rsyslog.wait_for("fork", 3)
    got = sorted((parse(r["rawmsg"])["params"]["llmpulse@32473"]["request_id"], r["procid"]) for r in records)
    assert got == [("r0", str(os.getpid())), ("r1", str(pid)), ("r2", str(os.getpid()))]


# -- header fields and settings -------------------------------------------------------------------


def test_header_fields_follow_rfc_5424() -> None:
    exporter = SyslogExporter(hostname="-", app_name="a" * 48)
    half_hour = timezone(timedelta(hours=5, minutes=30))
    odd = timezone(timedelta(hours=1, seconds=7))  # RFC 3339 offsets have no seconds: sent in UTC
    items = [
        to_dict(call(timestamp=datetime(2025, 6, 1, 12, 0, 0, 5, tzinfo=half_hour))),
        {"type": "log", "timestamp": datetime(2025, 6, 1, 12, 0, 0, tzinfo=odd)},
        {"type": "x" * 40, "note": "no timestamp"},
    ]
    first, second, third = (parse(m) for m in exporter.encode(items))
    assert first["timestamp"] == "2025-06-01T12:00:00.000005+05:30"
    assert (first["hostname"], first["app_name"]) == ("-", "a" * 48)
    assert second["timestamp"] == "2025-06-01T10:59:53Z"
    assert abs(third["time"] - datetime.now(UTC)) < timedelta(seconds=5)  # the export time
    assert third["msgid"] == "x" * 32
    assert exporter.port == 514
    assert SyslogExporter(protocol="tls").port == 6514


def test_bad_settings_are_refused_naming_the_argument() -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"port": 0}, "port"),
        ({"protocol": "sctp"}, "protocol"),
        ({"facility": "local8"}, "facility"),
        ({"facility": 24}, "facility"),
        ({"facility": True}, "facility"),
        ({"app_name": "a" * 49}, "app_name"),
        ({"app_name": "my app"}, "app_name"),
        ({"hostname": "host name"}, "hostname"),
        ({"hostname": "h" * 256}, "hostname"),
        ({"format": "xml"}, "format"),
        ({"ssl_context": ssl.create_default_context()}, "ssl_context"),
        ({"max_udp_message_bytes": 479}, "max_udp_message_bytes"),
        ({"max_udp_message_bytes": 65508}, "max_udp_message_bytes"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"host": ""}, "host"),
    ]
    for kwargs, argument in bad:
        with pytest.raises(ValueError, match=argument):
            SyslogExporter(**kwargs)
    assert parse_facility(" Local7 ") == 23
    assert parse_facility("13") == 13


def test_from_env() -> None:
    assert SyslogExporter.from_env({}) is None
    assert SyslogExporter.from_env({"SYSLOG_PORT": "514"}) is None
    made = SyslogExporter.from_env(
        {
            "SYSLOG_HOST": "logs.internal",
            "SYSLOG_PORT": "1514",
            "SYSLOG_PROTOCOL": "TCP",
            "SYSLOG_FACILITY": "local5",
            "SYSLOG_APP_NAME": "checkout",
            "SYSLOG_FORMAT": "json",
        },
        timeout_s=3.0,
    )
    assert made is not None
    assert (made.host, made.port, made.protocol, made.facility) == ("logs.internal", 1514, "tcp", 21)
    assert (made.app_name, made.format, made.timeout_s) == ("checkout", "json", 3.0)
    tls = SyslogExporter.from_env({"SYSLOG_HOST": "h", "SYSLOG_PROTOCOL": "tls", "SYSLOG_FACILITY": "3"})
    assert tls is not None
    assert (tls.port, tls.facility, tls.protocol, tls.format) == (6514, 3, "tls", "rfc5424")
    for variable, value in [
        ("SYSLOG_PORT", "abc"),
        ("SYSLOG_PORT", "70000"),
        ("SYSLOG_PROTOCOL", "sctp"),
        ("SYSLOG_FACILITY", "local9"),
        ("SYSLOG_APP_NAME", "my app"),
        ("SYSLOG_FORMAT", "xml"),
    ]:
        with pytest.raises(ValueError, match=variable):
            SyslogExporter.from_env({"SYSLOG_HOST": "h", variable: value})
    overridden = SyslogExporter.from_env({"SYSLOG_HOST": "h", "SYSLOG_PORT": "bad"}, port=99)
    assert overridden is not None
    assert overridden.port == 99  # an override wins and its variable is not read


def test_an_item_that_cannot_be_formatted_costs_only_itself(rsyslog: Rsyslog) -> None:
    exporter = _exporter(rsyslog, "udp", "invalid")
    result = exporter.export([to_dict(call(0)), "not a dict", to_dict(call(1))])  # type: ignore[list-item]
    exporter.shutdown(1.0)
    assert result is not None
    assert dict(result.dropped) == {"invalid_item": 1}
    assert len(rsyslog.wait_for("invalid", 2)) == 2
