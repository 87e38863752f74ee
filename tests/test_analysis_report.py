"""Reports: HTML with charts, Markdown, the webhook outbox against a local server that fails, then recovers."""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from analytics import report
from meshlens.cli import main
from tests.analysis_support import START, Plan, build_lake

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Hook(BaseHTTPRequestHandler):
    """Answers 500 while ``failures_left`` > 0, then 200; records every body."""

    failures_left = 0
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        failing = type(self).failures_left > 0
        type(self).failures_left -= 1
        self.send_response(500 if failing else 200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def hook():
    _Hook.failures_left, _Hook.bodies = 0, []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook
    server.shutdown()


@pytest.fixture(scope="module")
def canary_lake(tmp_path_factory):
    plan = Plan(hours=4, seed=9, rate_per_min=150, canary_service="PaymentService", regression_start_min=90)
    return build_lake(tmp_path_factory.mktemp("report") / "lake", plan)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def _options(**kw) -> report.ReportOptions:
    base = dict(since=START.isoformat(), now=(START + timedelta(hours=4)).isoformat(), backoff_seconds=0.0)
    return report.ReportOptions(**{**base, **kw})


@pytest.mark.slow
def test_html_report_parses_and_embeds_png_charts(canary_lake, tmp_path):
    result = report.run_once(canary_lake, _options(out=str(tmp_path / "r.html")))
    text = result.path.read_text()
    parser = _Collect()
    parser.feed(text)
    assert {"Incidents", "Canaries", "Worst services", "Worst edges"} <= set(parser.headings)
    assert len(parser.images) >= 2
    for src in parser.images:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "rollback" in text and "POST /v1/charges/{id}" in text


def test_markdown_report_writes_charts_beside_it(canary_lake, tmp_path):
    result = report.run_once(canary_lake, _options(out=str(tmp_path / "r.md"), fmt="md"))
    text = result.path.read_text()
    names = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", text)
    assert names and all((tmp_path / n).read_bytes().startswith(PNG_MAGIC) for _, n in names)
    assert text.startswith("# meshlens report")


@pytest.mark.slow
def test_webhook_down_keeps_the_message_then_delivers_it(canary_lake, tmp_path, hook):
    url, handler = hook
    handler.failures_left = 100  # down for the whole first run
    first = report.run_once(canary_lake, _options(out=str(tmp_path / "a.html"), webhook=url, retries=3))
    assert first.path.is_file() and not first.sent and first.pending == 1
    assert len(handler.bodies) == 3  # retried with back-off, then kept
    outbox = canary_lake.root / "reports" / "outbox"
    assert len(list(outbox.glob("*.json"))) == 1
    handler.failures_left = 1  # recovers after one more failure
    second = report.run_once(canary_lake, _options(out=str(tmp_path / "b.html"), webhook=url, retries=3))
    assert second.sent and second.pending == 0
    assert list(outbox.glob("*.json")) == []
    delivered = [b for b in handler.bodies[3:] if "text" in b]
    texts = {b["text"] for b in delivered}
    assert len(texts) == 2  # the first run's report was not lost
    assert all("meshlens report" in t and "Canary PaymentService v2" in t for t in texts)


def test_schedule_runs_on_every_and_cron(canary_lake, tmp_path):
    clock = [datetime(2026, 11, 10, 10, 0, 30, tzinfo=timezone.utc)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    lines: list[str] = []
    runs = report.run_schedule(canary_lake, _options(out=str(tmp_path / "s.html")), every=None,
                               cron="0 * * * *", echo=lines.append, max_runs=2, clock=lambda: clock[0], sleep=sleep)
    assert runs == 2
    assert lines[0] == "next report at 2026-11-10T11:00:00Z"
    assert slept[0] == pytest.approx(59 * 60 + 30)
    assert report.next_run(clock[0], every="1h", cron=None) == clock[0] + timedelta(hours=1)


def test_cli_report_bad_cron_is_one_line_error(canary_lake, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--data", str(canary_lake.root), "--cron", "every tuesday"])
    assert exit_info.value.code == 1
    assert "cron" in capsys.readouterr().err


@pytest.mark.slow
def test_report_on_the_demo_day_lists_outage_canary_and_policy(scenario, tmp_path):
    lake, truth = scenario
    policy = lake.root.parent / "logs" / "policy.toml"
    options = report.ReportOptions(since=truth.start, now=truth.end, out=str(tmp_path / "day.html"),
                                   policy=str(policy) if policy.is_file() else None)
    text = report.run_once(lake, options).path.read_text()
    violation = next(e for e in truth.events if e["kind"] == "policy_violation")
    if policy.is_file():
        assert f"{violation['caller']} -&gt; {violation['service']} ({violation['requests']})" in text
    outage = next(e for e in truth.events if e["kind"] == "outage")
    assert f"{outage['service']} 5xx ratio" in text
    assert "PaymentService v2" in text
