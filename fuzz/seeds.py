#!/usr/bin/env python3
"""Writes small hand-made seed inputs into corpus/<target>/ (git-ignored) for the targets
added with docs/fuzzing.md. Standard library only: tiny msgpack and protobuf writers."""
import gzip
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1_700_000_000


def mp(v):
    """msgpack encoding of str/int/float/bool/None/list/dict/bytes."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, bytes):
        return (b"\xc4" + bytes([len(v)]) if len(v) < 256 else b"\xc5" + struct.pack(">H", len(v))) + v
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return (b"\xd9" + bytes([len(b)]) if len(b) < 256 else b"\xda" + struct.pack(">H", len(b))) + b
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_bytes(tag, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(tag << 3 | 2) + varint(len(b)) + b


def pb_int(tag, n):
    return varint(tag << 3) + varint(n)


def pb_f64(tag, x):
    return varint(tag << 3 | 1) + struct.pack("<d", x)


def pb_map(tag, k, v):
    return pb_bytes(tag, pb_bytes(1, k) + pb_bytes(2, v))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- trace_intake_decode: selector bit 0 = v0.5, bit 1 = JSON --------------------------------
triggers = {"triggers": [{"rule": {"id": "crs-942-100", "name": "SQLi", "tags": {"type": "sql_injection", "category": "attack_attempt"}},
                          "rule_matches": [{"operator": "match_regex", "parameters": [{"address": "server.request.query", "value": "1 OR 1=1", "highlight": ["OR 1=1"]}]}]}]}
span = {"service": "shop", "name": "http.request", "resource": "GET /x", "trace_id": 42, "span_id": 7, "parent_id": 0,
        "start": 1_700_000_000_000_000_000, "duration": 1000, "error": 0, "type": "web",
        "meta": {"appsec.event": "true", "http.url": "/x?q=1", "_dd.appsec.json": json.dumps(triggers)},
        "metrics": {"_sampling_priority_v1": 2.0, "_dd.top_level": 1},
        "meta_struct": {"appsec": mp(triggers)}}
child = dict(span, span_id=8, parent_id=7, meta={}, metrics={"x": -1}, meta_struct={})
write("trace_intake_decode", "v04_msgpack", b"\x00" + mp([[span, child], [dict(child, trace_id=43)]]))
write("trace_intake_decode", "v04_empty", b"\x00" + mp([]))
write("trace_intake_decode", "v04_json", b"\x02" + json.dumps([[{k: v for k, v in span.items() if k != "meta_struct"}]]).encode())
strings = ["", "shop", "flask.request", "GET /x", "web", "appsec.event", "true", "_sampling_priority_v1"]
v05_span = [1, 2, 3, 42, 7, 0, 1_700_000_000_000_000_000, 10, 0, {5: 6}, {7: 2.0}, 4]
write("trace_intake_decode", "v05_msgpack", b"\x01" + mp([strings, [[v05_span, v05_span]]]))

# --- server_trace_intake: 0 protobuf, 1 meta_struct msgpack, 2 time, 3 query ---------------
pspan = (pb_bytes(1, "shop") + pb_bytes(2, "http.request") + pb_bytes(3, "GET /x") + pb_int(4, 42) + pb_int(5, 7)
         + pb_int(7, 1_700_000_000_000_000_000) + pb_int(8, 1000) + pb_map(10, "appsec.event", "true")
         + pb_map(10, "http.client_ip", "10.0.0.1") + pb_map(10, "_dd.appsec.json", json.dumps(triggers))
         + pb_bytes(11, pb_bytes(1, "_sampling_priority_v1") + pb_f64(2, 2.0))
         + pb_map(13, "appsec", mp(triggers)) + pb_bytes(12, "web"))
chunk = pb_int(1, 2) + pb_bytes(3, pspan) + pb_bytes(3, pb_bytes(1, "shop") + pb_int(5, 9))
tracer = pb_bytes(2, "python") + pb_bytes(6, chunk) + pb_bytes(8, "prod") + pb_bytes(9, "web-1")
write("server_trace_intake", "agent_payload", b"\x00" + pb_bytes(1, "host") + pb_bytes(2, "prod") + pb_bytes(5, tracer))
t = mp(triggers)
write("server_trace_intake", "meta_struct", b"\x01" + bytes([len(t) % 256]) + t + json.dumps(triggers).encode())
for i, s in enumerate(["now-1h", "-15m", "1700000000000", "now"]):
    write("server_trace_intake", f"time{i}", b"\x02" + s.encode())
write("server_trace_intake", "query", b"\x03" + b'@http.status_code:403 service:shop* env:"prod"')

# --- detection_search: 0 query, 1 time, 2 rule -----------------------------------------------
queries = ['@appsec.triggers.rule.id:crs-942-100 service:(web OR api) -env:staging',
           'status:high AND @http.status_code:>=400 "SQL injection" @network.client.ip:10.0.0.*',
           '(@http.method:GET OR @http.method:POST) NOT @http.url:*health* @n:[1 TO 2]', '*', '']
for i, q in enumerate(queries):
    write("detection_search", f"query{i}", b"\x00" + q.encode())
for i, s in enumerate(["now-1h", "now-2w", "2022-04-12T13:54:02.099Z", "2022-04-12", "2022-04-12T13:54:02+02:00", "1700000000"]):
    write("detection_search", f"time{i}", b"\x01" + s.encode())
rule = {"name": "SQLi burst", "type": "application_security", "isEnabled": True, "message": "SQLi from {{@network.client.ip}}",
        "queries": [{"query": "@appsec.triggers.rule.tags.type:sql_injection", "groupByFields": ["service"], "aggregation": "count", "name": "a"}],
        "cases": [{"name": "high", "status": "high", "condition": "a > 3"}],
        "options": {"evaluationWindow": 300, "keepAlive": 3600, "maxSignalDuration": 86400, "detectionMethod": "threshold"}, "tags": ["team:sec"]}
write("detection_search", "rule", b"\x02" + json.dumps(rule).encode())

# --- alerting_templates: 0 message, 1 webhook JSON, 3 webhook form ---------------------------
msg = ("{{#is_alert}}CPU {{value}} > {{threshold}} on {{host.name}} @pagerduty-ops @slack-sec{{/is_alert}}"
       "{{^is_alert}}ok{{/is_alert}}{{#is_match \"host.name\" \"web\"}}web{{/is_match}} {{last_triggered_at}}")
write("alerting_templates", "message", b"\x00" + (msg + "\0value=91\0threshold=90\0host=web-1\0is_alert").encode())
hook = '{"title": "$EVENT_TITLE", "body": "$EVENT_MSG", "date": $DATE, "attrs": $SECURITY_SIGNAL_ATTRIBUTES, "tag": "$TAGS[env]"}'
write("alerting_templates", "webhook_json", b"\x01" + (hook + "\0EVENT_MSG=a \"quoted\" \\ msg\0DATE=1700000000000").encode())
write("alerting_templates", "webhook_form", b"\x03" + (hook + "\0EVENT_TITLE=x&y=z").encode())

# --- query_and_intake ---------------------------------------------------------------------------
qsel = {0: ["avg:system.cpu.user{env:prod,host:web-*} by {host}.rollup(avg, 60)",
            "sum:requests.count{*}.as_count() / sum:requests.total{!env:dev}.fill(zero) * 100",
            "top(avg:system.load.1{*} by {host}, 5, 'mean', 'desc')"],
        1: ["a / b * 100", "anomalies(query1, 'basic', 2)"],
        2: ["avg:a{*}, max:b{x:y} by {z}"],
        3: ["avg(last_5m):avg:system.cpu.user{env:prod} by {host} > 90",
            "sum(last_1h):sum:errors{*}.as_count() >= 10"],
        4: ["\x05x = avg:a{*}.rollup(max) + 1"],
        5: ["now-1h", "1700000000", "now"]}
for sel, items in qsel.items():
    for i, s in enumerate(items):
        write("query_and_intake", f"s{sel}_{i}", bytes([sel]) + s.encode())
v1 = {"series": [{"metric": "a.b", "host": "h", "tags": ["x:1", "y"], "type": "count", "interval": 10, "device": "sda",
                  "points": [[NOW, 1.5], [NOW + 0.7, 2]]}, {"metric": "c", "tags": None, "points": [[NOW, -0.0]]}]}
write("query_and_intake", "v1_json", b"\x06" + json.dumps(v1).encode())
v2 = {"series": [{"metric": "m", "type": 1, "interval": 10, "points": [{"timestamp": NOW, "value": 2.5}],
                  "resources": [{"name": "h1", "type": "host"}], "tags": ["a:b"], "unit": "byte"}]}
write("query_and_intake", "v2_json", b"\x07" + json.dumps(v2).encode())
series = (pb_bytes(1, pb_bytes(1, "host") + pb_bytes(2, "h1")) + pb_bytes(2, "m.x") + pb_bytes(3, "a:b")
          + pb_bytes(4, pb_f64(1, 2.5) + pb_int(2, NOW)) + pb_int(5, 3) + pb_int(8, 10))
write("query_and_intake", "v2_protobuf", b"\x08" + pb_bytes(1, series))
dog = (pb_int(1, NOW) + pb_int(2, 3) + pb_f64(3, 1.0) + pb_f64(4, 3.0) + pb_f64(5, 2.0) + pb_f64(6, 6.0)
       + pb_bytes(7, varint(0) + varint(2) + varint(4)) + pb_bytes(8, varint(1) + varint(1) + varint(1)))
write("query_and_intake", "sketches", b"\x09" + pb_bytes(1, pb_bytes(1, "lat") + pb_bytes(2, "h1") + pb_bytes(4, "a:b") + pb_bytes(7, dog)))
write("query_and_intake", "check_runs", b"\x0a" + json.dumps([{"check": "app.ok", "host_name": "h", "status": 1, "timestamp": NOW, "message": "m", "tags": ["a:b"]}]).encode())
ev = {"apiKey": "x", "events": {"api": [{"msg_title": "t", "msg_text": "x", "timestamp": NOW, "alert_type": "error", "host": "h", "tags": ["a:b"]}]}, "internalHostname": "h"}
write("query_and_intake", "events", b"\x0b" + json.dumps(ev).encode())
write("query_and_intake", "events_v1", b"\x0b" + json.dumps({"title": "t", "text": "x", "date_happened": NOW}).encode())
write("query_and_intake", "gzip", b"\x0c\x00" + gzip.compress(json.dumps(v1).encode()))
write("query_and_intake", "deflate", b"\x0c\x01" + zlib.compress(json.dumps(v2).encode()))
