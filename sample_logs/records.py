"""Requests -> real VPC Lattice access-log records (the 35 fields of the real record), and files.

Every string column is a gather from a small lookup table (per edge, per callee and env, per
target group), so a million records cost a few polars operations, not a million dicts. Field
order and types follow the real record in ../shared/samples/vpc_lattice/: absent values are
``"-"``, durations and bytes are integers (ms), ``startTime`` is ISO-8601 with whole seconds
and a ``Z``. Files are gzip'd JSON lines laid out as S3 delivers them, one file per env and
half hour, named by the half hour they start (the delivery key time).
"""

from __future__ import annotations

import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from sample_logs import topology as topo
from sample_logs.traffic import Net, Requests

FIELDS = (
    "serviceNetworkArn", "resolvedUser", "listenerType", "authDeniedReason", "targetGroupArn",
    "sourceVpcArn", "destinationVpcId", "sourceIpPort", "listenerId", "targetIpPort",
    "failureReason", "serviceArn", "sourceVpcId", "startTime", "requestMethod", "requestPath",
    "protocol", "responseCode", "bytesReceived", "bytesSent", "duration", "userAgent",
    "hostHeader", "serverNameIndication", "requestToTargetDuration", "responseFromTargetDuration",
    "sslCipher", "tlsVersion", "callerPrincipal", "callerPrincipalOrgID", "callerX509IssuerOU",
    "callerX509SubjectCN", "callerX509SANNameCN", "callerX509SANDNS", "callerX509SANURI",
)
"""The 35 fields of the real record, in its order."""

INT_FIELDS = frozenset({"responseCode", "bytesReceived", "bytesSent", "duration",
                        "requestToTargetDuration", "responseFromTargetDuration"})

USER_AGENTS = {
    "java": "Apache-HttpClient/5.2.1 (Java/17.0.10)", "go": "Go-http-client/1.1",
    "python": "python-requests/2.31.0", "node": "axios/1.6.8", "kotlin": "okhttp/4.12.0",
}
UNKNOWN_AGENTS = {"legacy": "curl/8.5.0", "vendor": "python-urllib3/2.2.1",
                  "denied": "Boto3/1.34.90 md/Botocore#1.34.90 ua/2.0 os/linux#6.1.79 lang/python#3.11.8"}
UNKNOWN_ACCOUNTS = {"legacy": "111111111111", "vendor": "333333333333", "denied": "444444444444"}
PLAIN_HTTP_IN_STAGING = frozenset({"SizeGuideService", "SeoService", "BrandService"})
MESH_CA_OU = "shop-mesh-ca"
POOL = 8192


def _take(table: list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(table, dtype=pl.String).gather(pl.Series(idx, dtype=pl.UInt32))


# --- lookup tables ------------------------------------------------------------------------

def _unknown_key(edge: topo.Edge) -> str:
    return next(k for k, v in topo.UNKNOWN_PRINCIPALS.items() if v == edge.principal)


def _auth(net: Net, edge: topo.Edge) -> str:
    """How the caller of ``edge`` identifies itself: iam, spiffe, none or external."""
    if edge.kind != "normal":
        return "external"
    svc = net.services[net.index[edge.caller]]
    if edge.env == "staging" and svc.name in topo.UNAUTHENTICATED_IN_STAGING:
        return "none"
    return svc.auth


def edge_tables(net: Net) -> dict[str, list[str]]:
    """Per-edge strings (index: edge)."""
    cols: dict[str, list[str]] = {k: [] for k in (
        "vpc_arn", "vpc_id", "agent", "org", "issuer", "cn", "dns", "uri", "src_net")}
    for e in net.edges:
        env = topo.ENV_BY_NAME[e.env]
        auth = _auth(net, e)
        if auth == "external":
            key = _unknown_key(e)
            acct = UNKNOWN_ACCOUNTS[key]
            vpc = "vpc-" + topo.hid("vpc/" + key, 17)
            cols["vpc_arn"].append(f"arn:aws:ec2:{env.region}:{acct}:vpc/{vpc}")
            cols["vpc_id"].append(vpc)
            cols["agent"].append(UNKNOWN_AGENTS[key])
            cols["org"].append(topo.ORG_ID if acct == env.account else "-")
            cols["src_net"].append(f"10.250.{list(UNKNOWN_AGENTS).index(key) + 1}.")
            for k in ("issuer", "cn", "dns", "uri"):
                cols[k].append("-")
            continue
        idx = net.index[e.caller]
        svc = net.services[idx]
        cols["vpc_arn"].append(env.vpc_arn(svc.domain))
        cols["vpc_id"].append(env.vpc_id(svc.domain))
        cols["agent"].append(USER_AGENTS[svc.lang])
        cols["org"].append(topo.ORG_ID if auth == "iam" else "-")
        cols["src_net"].append(svc.cidr(env, idx).rsplit(".", 1)[0] + ".")
        spiffe = auth == "spiffe"
        cols["issuer"].append(MESH_CA_OU if spiffe else "-")
        cols["cn"].append(svc.kebab if spiffe else "-")
        cols["dns"].append(f"{svc.kebab}.{svc.domain}.svc.cluster.local" if spiffe else "-")
        cols["uri"].append(svc.spiffe(e.env) if spiffe else "-")
    return cols


def principal_table(net: Net) -> list[str]:
    """callerPrincipal / resolvedUser per (edge, session): index edge * 3 + session."""
    out: list[str] = []
    for e in net.edges:
        auth = _auth(net, e)
        for k in range(3):
            if auth == "external":
                out.append(e.principal)
            elif auth == "iam":
                svc = net.services[net.index[e.caller]]
                out.append(svc.role_arn(topo.ENV_BY_NAME[e.env], topo.hid(f"task/{e.env}/{svc.name}/{k}", 32)))
            else:
                out.append("-")
    return out


def callee_tables(net: Net) -> dict[str, list[str]]:
    """Per (callee, env) strings (index: service * n_envs + env)."""
    cols: dict[str, list[str]] = {k: [] for k in ("arn", "host", "sni", "dst_vpc", "proto", "cipher", "tls")}
    for svc in net.services:
        for env in topo.ENVS:
            plain = env.name == "staging" and svc.name in PLAIN_HTTP_IN_STAGING
            tls13 = int(topo.hid("tls/" + svc.name, 2), 16) % 10 < 7
            host = svc.host(env)
            cols["arn"].append(svc.svc_arn(env))
            cols["host"].append(host)
            cols["sni"].append("-" if plain else host)
            cols["dst_vpc"].append(env.vpc_id(svc.domain))
            cols["proto"].append("HTTP/2" if svc.http2 else "HTTP/1.1")
            cols["cipher"].append("-" if plain else "TLS_AES_128_GCM_SHA256" if tls13
                                  else "ECDHE-RSA-AES128-GCM-SHA256")
            cols["tls"].append("-" if plain else "TLSv1.3" if tls13 else "TLSv1.2")
    return cols


def tg_table(net: Net) -> list[str]:
    """targetGroupArn per (callee, env, version): index (service * n_envs + env) * 3 + version."""
    out = []
    for svc in net.services:
        for env in topo.ENVS:
            out += [svc.tg_arn(env, "v1"), svc.tg_arn(env, "v2"), "-"]
    return out


# --- paths --------------------------------------------------------------------------------

_HEX = np.array(list("0123456789abcdef"))


def _hex(raw: np.ndarray) -> np.ndarray:
    """Rows of random bytes -> hex strings (vectorized), first char forced to a digit."""
    chars = np.empty((raw.shape[0], raw.shape[1] * 2), dtype="<U1")
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    chars[:, 0] = _HEX[raw[:, 0] % 10]
    return np.ascontiguousarray(chars).view(f"<U{chars.shape[1]}")[:, 0]


def _pool(rng: np.random.Generator, kind: str) -> np.ndarray:
    """POOL id strings of one token kind (num, uuid, hex, p:<prefix>)."""
    if kind == "num":
        return rng.integers(10_000, 99_999_999, POOL).astype(str).astype(object)
    raw = rng.integers(0, 256, (POOL, 16), dtype=np.uint8)
    if kind == "uuid":
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
        h = _hex(raw).astype(object)
        return np.array([f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}" for x in h], dtype=object)
    if kind == "hex":
        return _hex(raw[:, :12]).astype(object)
    prefix = kind.split(":", 1)[1]
    return (prefix + "_" + _hex(raw[:, :5]).astype(object)).astype(object)


def paths(rng: np.random.Generator, net: Net, route: np.ndarray) -> pl.Series:
    """requestPath of every request: the route pattern with fresh ids (and its query)."""
    out = np.empty(len(route), dtype=object)
    pools: dict[str, np.ndarray] = {}
    order = np.argsort(route, kind="stable")
    bounds = np.flatnonzero(np.diff(route[order])) + 1
    for chunk in np.split(order, bounds):
        if len(chunk) == 0:
            continue
        r = net.routes[int(route[chunk[0]])][1]
        parts = re.split(r"\{([^}]+)\}", r.pattern)
        built = np.full(len(chunk), parts[0], dtype=object)
        for k in range(1, len(parts), 2):
            kind = parts[k]
            if kind not in pools:
                pools[kind] = _pool(rng, kind)
            built = built + pools[kind][rng.integers(0, POOL, len(chunk))] + parts[k + 1]
        out[chunk] = built + ("?" + r.query if r.query else "")
    return pl.Series("requestPath", out, dtype=pl.String)


# --- records ------------------------------------------------------------------------------

def _g(table: list[str], column: str) -> pl.Expr:
    """Expression: ``table[column]`` (a gather from a small lookup table)."""
    return pl.lit(pl.Series(table, dtype=pl.String)).gather(pl.col(column))


def _index_frame(net: Net, req: Requests) -> pl.DataFrame:
    """The integer columns the record expressions read."""
    n_env = len(topo.ENVS)
    ce = req["callee"].astype(np.int64) * n_env + req["env"]
    u32 = lambda a: np.ascontiguousarray(a, dtype=np.uint32)  # noqa: E731
    return pl.DataFrame({
        "e": u32(req["edge"]), "ce": u32(ce), "env": u32(req["env"]), "route": u32(req["route"]),
        "pr": u32(req["edge"].astype(np.int64) * 3 + req["session"]),
        "tg": u32(ce * 3 + req["version"]), "callee1": u32(req["callee"] + 1),
        "tgt_host": u32(10 + req["version"].astype(np.int32) * 100 + req["tgt_host"]),
        "src_host": u32(req["src_host"]), "src_port": u32(req["src_port"]),
        "t": np.ascontiguousarray(req["t"], dtype=np.int64), "denied": req["kind"] == 2,
        "status": req["status"].astype(np.int64), "bytes_in": req["bytes_in"],
        "bytes_out": req["bytes_out"], "duration": req["duration"],
        "rtt": req["rtt"].astype(np.int64), "rft": req["rft"].astype(np.int64),
    })


def frame(rng: np.random.Generator, net: Net, req: Requests) -> pl.DataFrame:
    """The Lattice records of ``req`` as a polars frame with the 35 real fields, in order."""
    et, ct = edge_tables(net), callee_tables(net)
    principal = _g(principal_table(net), "pr")
    denied = pl.col("denied")
    tgt = pl.concat_str([pl.lit("172.31."), pl.col("callee1"), pl.lit("."), pl.col("tgt_host"), pl.lit(":8080")])
    src = pl.concat_str([_g(et["src_net"], "e"), pl.col("src_host"), pl.lit(":"), pl.col("src_port")])
    cols: dict[str, pl.Expr] = {
        "serviceNetworkArn": _g([e.sn_arn for e in topo.ENVS], "env"),
        "resolvedUser": principal,
        "listenerType": pl.lit("-"),
        "authDeniedReason": pl.when(denied).then(pl.lit("Service")).otherwise(pl.lit("-")),
        "targetGroupArn": _g(tg_table(net), "tg"),
        "sourceVpcArn": _g(et["vpc_arn"], "e"),
        "destinationVpcId": _g(ct["dst_vpc"], "ce"),
        "sourceIpPort": src,
        "listenerId": pl.lit("-"),
        "targetIpPort": pl.when(denied).then(pl.lit("-")).otherwise(tgt),
        "failureReason": pl.when(denied).then(pl.lit("ClientAccessDenied")).otherwise(pl.lit("-")),
        "serviceArn": _g(ct["arn"], "ce"),
        "sourceVpcId": _g(et["vpc_id"], "e"),
        "startTime": pl.from_epoch(pl.col("t"), time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "requestMethod": _g([r.method for _, r in net.routes], "route"),
        "requestPath": pl.col("path"),
        "protocol": _g(ct["proto"], "ce"),
        "responseCode": pl.col("status"),
        "bytesReceived": pl.col("bytes_in"),
        "bytesSent": pl.col("bytes_out"),
        "duration": pl.col("duration"),
        "userAgent": _g(et["agent"], "e"),
        "hostHeader": _g(ct["host"], "ce"),
        "serverNameIndication": _g(ct["sni"], "ce"),
        "requestToTargetDuration": pl.col("rtt"),
        "responseFromTargetDuration": pl.col("rft"),
        "sslCipher": _g(ct["cipher"], "ce"),
        "tlsVersion": _g(ct["tls"], "ce"),
        "callerPrincipal": principal,
        "callerPrincipalOrgID": _g(et["org"], "e"),
        "callerX509IssuerOU": _g(et["issuer"], "e"),
        "callerX509SubjectCN": _g(et["cn"], "e"),
        "callerX509SANNameCN": pl.lit("-"),
        "callerX509SANDNS": _g(et["dns"], "e"),
        "callerX509SANURI": _g(et["uri"], "e"),
    }
    base = _index_frame(net, req).with_columns(paths(rng, net, req["route"]).alias("path"))
    return base.select([v.alias(k) for k, v in cols.items()])


# --- files --------------------------------------------------------------------------------

def ndjson(records: pl.DataFrame) -> bytes:
    """The records as JSON lines."""
    buf = io.BytesIO()
    records.write_ndjson(buf)
    return buf.getvalue()


CHUNK_ROWS = 120_000
"""Records built and written per batch of whole files (bounds memory)."""


def write_files(out_dir: Path, rng: np.random.Generator, net: Net, req: Requests, *,
                seed: int) -> list[dict[str, object]]:
    """Write one gzip'd file per (env, half hour) in the S3 layout; returns path, env, lines."""
    key = req["env"].astype(np.int64) * 10**9 + req["t"] // 1800
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1, [len(key)]]).tolist()
    written: list[dict[str, object]] = []
    first = 0
    while first < len(bounds) - 1:
        last = first + 1
        while last < len(bounds) - 1 and bounds[last + 1] - bounds[first] <= CHUNK_ROWS:
            last += 1
        written += _write_batch(out_dir, rng, net, req, bounds[first:last + 1], seed=seed)
        first = last
    return written


def _write_batch(out_dir: Path, rng: np.random.Generator, net: Net, req: Requests,
                 bounds: list[int], *, seed: int) -> list[dict[str, object]]:
    """Build the records of files ``bounds[i]:bounds[i+1]`` and write them (gzip in threads)."""
    lo, hi = bounds[0], bounds[-1]
    records = frame(rng, net, {k: v[lo:hi] for k, v in req.items()})
    jobs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        env = topo.ENVS[int(req["env"][a])]
        rel = s3_key(env, int(req["t"][a]) // 1800 * 1800, seed=seed)
        jobs.append((out_dir / rel, records.slice(a - lo, b - a), env.name, rel))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # polars releases the GIL
        list(pool.map(_write_gz, jobs))
    return [{"path": rel, "env": env, "lines": part.height} for _, part, env, rel in jobs]


def _write_gz(job: tuple[Path, pl.DataFrame, str, str]) -> None:
    path, part = job[0], job[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    part.write_ndjson(path, compression="gzip", compression_level=1)


def s3_key(env: topo.EnvSpec, stamp: int, *, seed: int) -> str:
    """``AWSLogs/<account>/VpcLattice/AccessLogs/<region>/YYYY/MM/DD/HH/<name>.log.gz``."""
    import datetime as dt

    moment = dt.datetime.fromtimestamp(stamp, tz=dt.timezone.utc)
    folder = moment.strftime("%Y/%m/%d/%H")
    name = (f"{env.account}_vpclatticeaccesslogs_{env.region}_{env.sn_id}_"
            f"{moment.strftime('%Y%m%dT%H%MZ')}_{topo.hid(f'{seed}/{env.name}/{stamp}', 8)}.log.gz")
    return f"AWSLogs/{env.account}/VpcLattice/AccessLogs/{env.region}/{folder}/{name}"
