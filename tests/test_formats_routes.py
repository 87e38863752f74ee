"""Path templating (meshlens.routes): golden input/expected pairs and a bounded route count."""

from __future__ import annotations

import random
import re
import uuid

import polars as pl
import pytest

from meshlens.routes import template_expr, template_path, template_series

PAIRS = [
    # ids of every kind become {id}
    ("/v1/charges/ch_8f3a", "/v1/charges/{id}"),
    ("/v1/charges/ch_8f3a?expand=balance", "/v1/charges/{id}"),
    ("/v1/charges/ch_3MtwBwLkdIwHu7ix28a3tqPa/capture", "/v1/charges/{id}/capture"),
    ("/v1/customers/cus_NffrFeUfNV2Hib", "/v1/customers/{id}"),
    ("/v1/orders/ord-12345", "/v1/orders/{id}"),
    ("/v1/orders/ord-12345/items/7", "/v1/orders/{id}/items/{id}"),
    ("/services/svc-0cfe1f49ff3266204", "/services/{id}"),
    ("/instances/i-0abc123def4567890/stop", "/instances/{id}/stop"),
    ("/api/v2/users/4711", "/api/v2/users/{id}"),
    ("/a/1/2/3/4", "/a/{id}/{id}/{id}/{id}"),
    ("/carts/3f2a1b4c-1d2e-4f5a-8b9c-0d1e2f3a4b5c", "/carts/{id}"),
    ("/carts/3F2A1B4C-1D2E-4F5A-8B9C-0D1E2F3A4B5C/items", "/carts/{id}/items"),
    ("/objects/507f1f77bcf86cd799439011", "/objects/{id}"),
    ("/commits/a94a8fe5ccb19ba61c4c0873d391e987982fbbd3", "/commits/{id}"),
    ("/x/0xDEADBEEF", "/x/{id}"),
    ("/users/bob@example.com/settings", "/users/{id}/settings"),
    ("/reports/2026-11-10", "/reports/{id}"),
    ("/events/2026-11-10T09:00:00Z", "/events/{id}"),
    ("/hosts/10.1.4.23/metrics", "/hosts/{id}/metrics"),
    ("/prices/-3.5", "/prices/{id}"),
    ("/tokens/dGhpcyBpcyBhIHRlc3Q=", "/tokens/{id}"),
    ("/tokens/aGVsbG8gd29ybGQgaG93IGFyZQ1", "/tokens/{id}"),
    ("/session/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "/session/{id}"),
    ("/topics/arn:aws:sns:us-east-1:111111111111:orders-topic/publish", "/topics/{id}/publish"),
    ("/invoices/INV00042", "/invoices/{id}"),
    ("/users/user12345", "/users/{id}"),
    ("/short/k3j4h5g6f7d8", "/short/{id}"),
    ("/cart/items/li_7Hx2", "/cart/items/{id}"),
    ("/payments/pay_1234abcd", "/payments/{id}"),
    ("/blog/geekery/118.html", "/blog/geekery/{id}.html"),
    ("/files/12345.pdf", "/files/{id}.pdf"),
    ("/files/blogposts/20071210/", "/files/blogposts/{id}/"),
    ("/static/app.27138e04.js", "/static/app.{id}.js"),
    ("/static/main-5e6852b9c1.css", "/static/main-{id}.css"),
    ("/blog/2007/May/20", "/blog/{id}/May/{id}"),
    # ordinary words, versions and file names stay
    ("/v1/charges", "/v1/charges"),
    ("/healthz", "/healthz"),
    ("/api/v2/users", "/api/v2/users"),
    ("/oauth2/idpresponse?code=XXXXX", "/oauth2/idpresponse"),
    ("/api-v2/x", "/api-v2/x"),
    ("/ec2/s3/h2/utf8", "/ec2/s3/h2/utf8"),
    ("/presentations/logstash-monitorama-2013/images/kibana-search.png",
     "/presentations/logstash-monitorama-2013/images/kibana-search.png"),
    ("/presentations/logstash-scale11x/images/kibana-dashboard3.png",
     "/presentations/logstash-scale11x/images/kibana-dashboard3.png"),
    ("/files/logstash/logstash-1.3.2-monolithic.jar", "/files/logstash/logstash-1.3.2-monolithic.jar"),
    ("/kibana/css/jquery-ui-1.8.16.custom.css", "/kibana/css/jquery-ui-1.8.16.custom.css"),
    ("/presentations/logstash-metrics-sf-2012.10/css/main.css", "/presentations/logstash-metrics-sf-2012.10/css/main.css"),
    ("/blog/tags/sysadvent2009", "/blog/tags/sysadvent2009"),
    ("/files/rubygems615/", "/files/rubygems615/"),
    ("/docs/Getting-Started-Guide-v2", "/docs/Getting-Started-Guide-v2"),
    ("/internationalization/deadbeef", "/internationalization/deadbeef"),
    ("/search", "/search"),
    ("/", "/"),
    ("", ""),
    ("*", "*"),
    ("//double//slash", "//double//slash"),
    ("/trailing/", "/trailing/"),
    ("/page#fragment", "/page"),
]


@pytest.mark.parametrize(("path", "route"), PAIRS)
def test_template_path(path: str, route: str) -> None:
    assert template_path(path) == route


def test_vectorized_equals_scalar_and_keeps_order_and_nulls() -> None:
    paths = [p for p, _ in PAIRS] + [None] + [p for p, _ in reversed(PAIRS)]
    frame = pl.DataFrame({"path": paths}, schema={"path": pl.String})
    routes = frame.select(template_expr(pl.col("path")))["path"].to_list()
    assert routes == [None if p is None else template_path(p) for p in paths]
    assert template_path(None) is None
    assert template_series(pl.Series("p", [], dtype=pl.String)).to_list() == []


def test_routes_stay_bounded_with_random_ids() -> None:
    rng = random.Random(7)
    templates = {
        "/v1/charges/{}": lambda: f"ch_{rng.getrandbits(40):x}",
        "/v1/charges/{}/capture": lambda: f"ch_{rng.getrandbits(40):x}",
        "/v1/orders/{}": lambda: f"ord-{rng.randint(1, 10**9)}",
        "/v1/orders/{}/items/{}": lambda: str(rng.randint(1, 10**6)),
        "/v1/carts/{}": lambda: str(uuid.UUID(int=rng.getrandbits(128))),
        "/v1/objects/{}": lambda: f"{rng.getrandbits(96):024x}",
        "/v1/users/{}/orders": lambda: f"user{rng.randint(10**5, 10**8)}@example.com",
        "/v1/reports/{}": lambda: f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "/v1/instances/{}": lambda: f"i-0{rng.getrandbits(64):016x}",
        "/healthz": lambda: "",
    }
    paths = []
    for _ in range(10_000):
        template, make = rng.choice(list(templates.items()))
        paths.append(template.format(*(make() for _ in range(template.count("{}")))))
    routes = set(template_series(pl.Series(paths)).to_list())
    assert routes == {t.replace("{}", "{id}") for t in templates}


def test_apache_routes_are_bounded(samples_dir) -> None:
    """Routes of the 10,000 real Apache lines: at most one per page once numeric parts collapse.

    The site is static (blog posts, slides, files), so most of its 1,368 distinct paths are
    genuinely different pages; what must collapse are the numeric parts: numbered posts
    (``/blog/geekery/118.html``), dated archives (``/blog/2007/May/20``) and dated folders
    (``/files/blogposts/20071210/``). The bound is computed independently: the distinct paths
    after masking every all-digit segment (or file stem) with a plain Python regex.
    """
    from ingest import combined

    data = (samples_dir / "apache_combined" / "elastic-examples_apache_logs.log").read_bytes()
    paths = combined.parse(data, first_line_no=1).rows["path"].drop_nulls()
    routes = set(template_series(paths).to_list())
    masked = {re.sub(r"(?<=/)[0-9]+(?=/|$|\.)", "N", p) for p in paths.to_list()}
    assert len(routes) <= len(masked) < paths.n_unique()
    assert not any(re.search(r"/[0-9]+(?:/|$|\.)", r) for r in routes)
    assert "/blog/geekery/{id}.html" in routes
