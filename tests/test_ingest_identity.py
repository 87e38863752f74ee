"""Identity: the inventory file, its validation, the AWS import, and resolution with and without it."""

from __future__ import annotations

import json
import textwrap

import polars as pl
import pytest

from meshlens import inventory as inv
from meshlens.errors import ConfigError
from meshlens.identity import SEP, Resolver
from meshlens.schema import UNKNOWN

INVENTORY = textwrap.dedent("""
    [[service]]
    name = "PaymentService"
    hosts = ["payment-service-*"]
    ids = ["svc-0cfe1f49ff3266204"]
    principals = ["spiffe://prod.mesh/ns/pay/sa/payment-service"]

    [[service]]
    name = "OrderService"
    principals = ["arn:aws:sts::*:assumed-role/order-*"]
    cidrs = ["10.1.4.0/24"]

    [[target_group]]
    id = "tg-0277f384abfefe8aa"
    service = "PaymentService"
    version = "v2"

    [[env]]
    name = "prod"
    service_networks = ["arn:aws:vpc-lattice:us-east-1:111111111111:servicenetwork/sn-0e05d75deabe9f290"]
    accounts = ["111111111111"]

    [[env]]
    name = "staging"
    accounts = ["222222222222"]
""")


@pytest.fixture()
def inventory(tmp_path):
    path = tmp_path / "meshlens.toml"
    path.write_text(INVENTORY)
    return inv.load(path)


def _frame(**cols):
    n = max(len(v) for v in cols.values())
    return pl.DataFrame({k: pl.Series(v if len(v) == n else v * n, dtype=pl.String) for k, v in cols.items()})


def test_load_inventory(inventory):
    assert [s.name for s in inventory.services] == ["PaymentService", "OrderService"]
    assert inventory.target_groups[0].version == "v2"
    assert inventory.envs[1].accounts == ("222222222222",)


@pytest.mark.parametrize("text,message", [
    ("[[servcie]]\nname='x'", "unknown top-level table 'servcie'; did you mean service?"),
    ("[[service]]\nnme='x'", r"\[\[service\]\] #1: unknown key 'nme'; did you mean name\?"),
    ("[[service]]\nhosts=['a']", r"\[\[service\]\] #1: missing name"),
    ("[[service]]\nname='x'\nhosts='a'", "hosts must be a list of non-empty strings"),
    ("[[service]]\nname='x'\ncidrs=['10.0.0.0/33']", "is not a CIDR"),
    ("[[target_group]]\nid='tg-1'", "needs a service or a version"),
    ("service = 'x'", "must be an array of tables"),
    ("[[service]\nname='x'", "not valid TOML"),
])
def test_invalid_inventory_says_what_and_where(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        inv.load(path)


def test_missing_inventory_file(tmp_path):
    with pytest.raises(ConfigError, match="no such inventory file"):
        inv.load(tmp_path / "nope.toml")


def test_resolution_with_inventory(inventory):
    frame = _frame(
        _service_ref=["arn:aws:vpc-lattice:us-east-1:111111111111:service/svc-0cfe1f49ff3266204", None, None, None],
        _host=[None, "payment-service-prod.internal:443", "orders-0123456789abcdef0.7d67968.vpc-lattice-svcs.us-east-1.on.aws", None],
        caller_principal=["arn:aws:sts::111111111111:assumed-role/order-task/s1", None, None, None],
        _principals=["", "spiffe://prod.mesh/ns/pay/sa/payment-service", "", ""],
        target_group=["tg-0277f384abfefe8aa", None, "tg-9999", None],
        service_network=["sn-0e05d75deabe9f290", None, None, None],
        account=[None, "222222222222", None, "333"],
        source_ip=["10.9.9.9", "10.9.9.9", "10.1.4.77", "8.8.8.8"],
    )
    out = Resolver(inventory).resolve(frame)
    assert out.get_column("service").to_list() == ["PaymentService", "PaymentService", "orders", UNKNOWN]
    assert out.get_column("version").to_list() == ["v2", None, "tg-9999", None]
    assert out.get_column("caller").to_list() == ["OrderService", "PaymentService", "OrderService", UNKNOWN]
    assert out.get_column("env").to_list() == ["prod", "staging", None, None]
    assert out.get_column("caller_principal").to_list() == [
        "arn:aws:sts::111111111111:assumed-role/order-task/s1", "spiffe://prod.mesh/ns/pay/sa/payment-service", None, None]


def test_defaults_without_inventory():
    frame = _frame(
        _host=["test2-0cfe1f49ff3266204.7d67968.vpc-lattice-svcs.ap-southeast-2.on.aws", None, None],
        _service_ref=[None, "arn:aws:vpc-lattice:us-east-1:1:service/svc-0aaaaaaaaaaaaaaaa", None],
        caller_principal=["arn:aws:sts::123:assumed-role/checkout-role/abc", None, "arn:aws:iam::123:user/alice"],
        _principals=[None, SEP.join(["CN=weird", "spiffe://cluster.local/ns/shop/sa/cart"]), None],
    )
    out = Resolver().resolve(frame)
    assert out.get_column("service").to_list() == ["test2", "svc-0aaaaaaaaaaaaaaaa", UNKNOWN]
    assert out.get_column("caller").to_list() == ["checkout-role", "cart", UNKNOWN]
    assert out.get_column("caller_principal").to_list()[2] == "arn:aws:iam::123:user/alice"


def test_principals_as_list_column_and_istio_cluster():
    frame = pl.DataFrame({
        "_principals": pl.Series([["spiffe://cluster.local/ns/default/sa/productpage"], []], dtype=pl.List(pl.String)),
        "_upstream_cluster": ["outbound|9080|v3|reviews.default.svc.cluster.local", None],
    })
    out = Resolver().resolve(frame)
    assert out.get_column("caller").to_list() == ["productpage", UNKNOWN]
    assert out.get_column("service").to_list() == ["reviews", UNKNOWN]
    assert out.get_column("version").to_list() == ["v3", None]


def test_parser_set_names_win():
    frame = _frame(service=["Reviews"], caller=["ProductPage"], version=["v1"],
                   _host=["payment-service-x"])
    out = Resolver().resolve(frame)
    assert out.row(0, named=True) | {} == out.row(0, named=True)
    assert (out["service"][0], out["caller"][0], out["version"][0]) == ("Reviews", "ProductPage", "v1")


def test_resolution_is_consistent_across_frames(inventory):
    resolver = Resolver(inventory)
    frame = _frame(_host=["payment-service-a", "other-0123456789abcdef0.x.vpc-lattice-svcs.y"])
    assert resolver.resolve(frame)["service"].to_list() == resolver.resolve(frame)["service"].to_list() == [
        "PaymentService", "other"]


def test_import_from_aws_cli(tmp_path):
    services = {"items": [
        {"arn": "arn:aws:vpc-lattice:us-east-1:111111111111:service/svc-0cfe1f49ff3266204",
         "id": "svc-0cfe1f49ff3266204", "name": "payments",
         "dnsEntry": {"domainName": "payments-0cfe1f49ff3266204.7d67968.vpc-lattice-svcs.us-east-1.on.aws",
                      "hostedZoneId": "Z1"}, "status": "ACTIVE"}]}
    groups = {"items": [
        {"arn": "arn:aws:vpc-lattice:us-east-1:111111111111:targetgroup/tg-0277f384abfefe8aa",
         "id": "tg-0277f384abfefe8aa", "name": "payments-v2", "type": "IP",
         "serviceArns": ["arn:aws:vpc-lattice:us-east-1:111111111111:service/svc-0cfe1f49ff3266204"]},
        {"arn": "arn:aws:vpc-lattice:us-east-1:111111111111:targetgroup/tg-0aaa", "id": "tg-0aaa",
         "name": "payments-blue", "serviceArns": []}]}
    paths = []
    for name, doc in (("s.json", services), ("g.json", groups)):
        (tmp_path / name).write_text(json.dumps(doc))
        paths.append(tmp_path / name)
    built = inv.import_aws(inv.load_json_documents(paths))
    text = inv.to_toml(built)
    (tmp_path / "out.toml").write_text(text)
    again = inv.load(tmp_path / "out.toml")
    assert again.services[0].name == "payments" and "svc-0cfe1f49ff3266204" in again.services[0].ids
    assert [(t.id, t.service, t.version) for t in again.target_groups] == [
        ("tg-0277f384abfefe8aa", "payments", "v2"), ("tg-0aaa", None, "blue")]


def test_import_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected the JSON printed by aws vpc-lattice"):
        inv.import_aws(inv.load_json_documents([tmp_path / "x.json"]))
