"""Names in questions: typos, lower case, informal names, look-alikes, ambiguity, unknown names."""

from __future__ import annotations

import pytest

from nlq.entities import (Vocabulary, find_env, find_principal, find_route, find_services,
                          find_versions, service_keys, templated, unknown_names)

SERVICES = ["PaymentService", "PaymentGatewayAdapter", "OrderService", "OrdersReporting",
            "OrderHistoryService", "CheckoutService", "InventoryService", "FraudService",
            "FraudScoreAdapter", "EmailSender", "EmailProviderAdapter", "CarrierGateway",
            "AccountService", "CompareService", "SearchService", "SearchIndexer", "SecretsBroker"]
VOCAB = Vocabulary(services=SERVICES, versions=["v1", "v2"], routes=["/v1/charges/{id}", "/orders/{id}"],
                   principals=["arn:aws:sts::333333333333:assumed-role/vendor-catalog-sync/s1"], envs=["prod", "staging"])


def resolved(text: str) -> list[str | None]:
    return [m.value for m in find_services(text, VOCAB)]


@pytest.mark.parametrize("text, expected", [
    ("who calls PaymentService", ["PaymentService"]),
    ("who calls PaymnetService", ["PaymentService"]),
    ("who calls paymentservice", ["PaymentService"]),
    ("errors of the payments svc", ["PaymentService"]),
    ("errors of the payment service", ["PaymentService"]),
    ("p99 of Orders", ["OrderService"]),
    ("orders reporting callers", ["OrdersReporting"]),
    ("OrdersReporting callers", ["OrdersReporting"]),
    ("order history service", ["OrderHistoryService"]),
    ("PaymentGatewayAdapter latency", ["PaymentGatewayAdapter"]),
    ("the payment gateway", ["PaymentGatewayAdapter"]),
    ("latency of FraudService", ["FraudService"]),
    ("fraud score adapter", ["FraudScoreAdapter"]),
    ("InventorySvc errors", ["InventoryService"]),
    ("who depends on the InventryService", ["InventoryService"]),
    ("from OrderService to PaymentService", ["OrderService", "PaymentService"]),
    ("the carrier", ["CarrierGateway"]),
])
def test_resolution(text: str, expected: list[str]) -> None:
    assert resolved(text) == expected


@pytest.mark.parametrize("text", [
    "compare the error rate today", "how many errors in the last hour", "which account called",
    "search requests by caller", "who was denied", "show me the top routes",
])
def test_ordinary_words_are_not_services(text: str) -> None:
    assert resolved(text) == []


def test_never_a_look_alike() -> None:
    assert resolved("PaymentService") == ["PaymentService"]
    assert "PaymentGatewayAdapter" not in service_keys("PaymentService")
    assert resolved("Orders") == ["OrderService"] and resolved("Order") == ["OrderService"]


def test_ambiguous_names_list_candidates() -> None:
    (mention,) = find_services("errors of the email service", VOCAB)
    assert mention.value is None and set(mention.candidates) == {"EmailSender", "EmailProviderAdapter"}


def test_unknown_camel_case_names() -> None:
    text = "who calls KafkaBroker"
    assert unknown_names(text, VOCAB, find_services(text, VOCAB)) == ["KafkaBroker"]
    assert unknown_names("who calls PaymentService", VOCAB, find_services("who calls PaymentService", VOCAB)) == []


def test_other_slots() -> None:
    assert find_env("errors in production", VOCAB) == "prod"
    assert find_env("staging traffic", VOCAB) == "staging"
    assert find_env("errors of PaymentService", VOCAB) is None
    assert find_versions("v1 vs v2 of PaymentService", VOCAB) == ["v1", "v2"]
    assert find_versions("version 3", VOCAB) == []
    assert find_route("POST /v1/charges/ch_8f3a2b91c0 errors", VOCAB) == ("POST", "/v1/charges/{id}")
    assert find_route("GET /orders/123", VOCAB) == ("GET", "/orders/{id}")
    assert find_route("requests/sec", VOCAB) == (None, None)
    assert templated("/v1/items/550e8400-e29b-41d4-a716-446655440000") == "/v1/items/{id}"
    assert find_principal("when did vendor-catalog-sync last call", VOCAB) == "vendor-catalog-sync"
