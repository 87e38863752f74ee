"""Helpers for the ingest tests: VPC Lattice records built by hand, files laid out like S3."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ACCOUNT = "123467890123"
BASE_TIME = datetime(2026, 11, 10, 9, 0, tzinfo=timezone.utc)


def record(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """One VPC Lattice access-log record with every field of the real record (AWS sample)."""
    arn = f"arn:aws:vpc-lattice:us-east-1:{ACCOUNT}"
    start = BASE_TIME + timedelta(seconds=i)
    rec: dict[str, Any] = {
        "serviceNetworkArn": f"{arn}:servicenetwork/sn-0e05d75deabe9f290",
        "resolvedUser": f"arn:aws:sts::{ACCOUNT}:assumed-role/orders-task-role/sess{i % 3}",
        "listenerType": "-", "authDeniedReason": "-",
        "targetGroupArn": f"{arn}:targetgroup/tg-0277f384abfefe8aa",
        "sourceVpcArn": f"arn:aws:ec2:us-east-1:{ACCOUNT}:vpc/vpc-04157e16d89eba97b",
        "destinationVpcId": "vpc-05e207e48696b69b6", "sourceIpPort": f"10.1.4.{i % 250}:5{i % 1000:04d}",
        "listenerId": "-", "targetIpPort": "172.31.9.231:80", "failureReason": "-",
        "serviceArn": f"{arn}:service/svc-0cfe1f49ff3266204", "sourceVpcId": "vpc-04157e16d89eba97b",
        "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "requestMethod": "POST",
        "requestPath": f"/v1/charges/ch_{i:06d}?expand=1", "protocol": "HTTP/1.1", "responseCode": 200,
        "bytesReceived": 100 + i, "bytesSent": 1000 + i, "duration": 20 + i % 7, "userAgent": "curl/8.5.0",
        "hostHeader": "payments-0cfe1f49ff3266204.7d67968.vpc-lattice-svcs.us-east-1.on.aws",
        "serverNameIndication": "payments-0cfe1f49ff3266204.7d67968.vpc-lattice-svcs.us-east-1.on.aws",
        "requestToTargetDuration": 1, "responseFromTargetDuration": 18,
        "sslCipher": "ECDHE-RSA-AES128-GCM-SHA256", "tlsVersion": "TLSv1.2",
        "callerPrincipal": f"arn:aws:sts::{ACCOUNT}:assumed-role/orders-task-role/sess{i % 3}",
        "callerPrincipalOrgID": "-", "callerX509IssuerOU": "-", "callerX509SubjectCN": "-",
        "callerX509SANNameCN": "-", "callerX509SANDNS": "-", "callerX509SANURI": "-",
    }
    rec.update(overrides)
    return rec


def lines(n: int, *, start: int = 0, **overrides: Any) -> bytes:
    """``n`` records as JSON lines."""
    return b"".join(json.dumps(record(i, **overrides)).encode() + b"\n" for i in range(start, start + n))


def write_s3_layout(root: Path, *, files: int, per_file: int) -> list[Path]:
    """Gzip files in the nested folders S3 delivery uses; returns the files written."""
    written = []
    for f in range(files):
        folder = root / "AWSLogs" / ACCOUNT / "VpcLattice" / "AccessLogs" / "us-east-1" / "2026" / "11" / "10" / f"{9 + f:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{ACCOUNT}_vpclattice_us-east-1_20261110T{9 + f:02d}00Z_{f:08x}.log.gz"
        path.write_bytes(gzip.compress(lines(per_file, start=f * per_file)))
        written.append(path)
    return written


def run(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit status, stdout, stderr)."""
    from meshlens.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
