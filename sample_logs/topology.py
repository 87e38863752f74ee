"""The demo e-commerce service network: services, their routes and the layered call graph.

Pure data, no randomness that depends on the run: every id (Lattice service, target group,
VPC), every CIDR and every principal is derived from names with a hash, so the same topology
comes out of every run. ``build()`` returns the topology the scenario generator draws traffic
from.

Layers (callers call the next layers down):
  0 ingress (callers only: they are not Lattice services), 1 front ends / BFFs,
  2 business services, 3 domain back ends, 4 adapters and infrastructure.
Edges carry a fan-out: calls to the callee per request the caller receives (for ingress,
a share of the ingress traffic). Service rates follow by propagating fan-outs down the layers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

ORG_ID = "o-7k2m9q4x1z"


@dataclass(frozen=True)
class EnvSpec:
    """One environment: its AWS account, region, service network and VPCs."""

    name: str
    account: str
    region: str
    octet: int  # second octet of the caller CIDRs (10.<octet>.<service>.0/24)
    share: float  # share of the whole scenario's requests

    @property
    def sn_id(self) -> str:
        return "sn-" + hid(f"{self.name}/sn", 17)

    @property
    def sn_arn(self) -> str:
        return f"arn:aws:vpc-lattice:{self.region}:{self.account}:servicenetwork/{self.sn_id}"

    def vpc_id(self, domain: str) -> str:
        return "vpc-" + hid(f"{self.name}/vpc/{domain}", 17)

    def vpc_arn(self, domain: str) -> str:
        return f"arn:aws:ec2:{self.region}:{self.account}:vpc/{self.vpc_id(domain)}"


ENVS: tuple[EnvSpec, ...] = (
    EnvSpec("prod", "111111111111", "us-east-1", 1, 0.86),
    EnvSpec("staging", "222222222222", "us-west-2", 2, 0.14),
)
ENV_BY_NAME = {e.name: e for e in ENVS}


@dataclass(frozen=True)
class Route:
    """One route: a method and a path pattern whose ``{kind}`` tokens become ids.

    Token kinds: ``{num}`` (decimal), ``{uuid}``, ``{hex}`` (24 hex chars), ``{p:xx}``
    (prefixed ``xx_8f3a2b91c0``). Every token templates to ``{id}`` in the route.
    ``query`` is appended to some paths (never part of the route).
    """

    method: str
    pattern: str
    weight: float
    median_ms: float
    sigma: float = 0.5
    req_bytes: int = 300
    resp_bytes: int = 1200
    p4xx: float = 0.01
    query: str = ""

    @property
    def template(self) -> str:
        return re.sub(r"\{[^}]+\}", "{id}", self.pattern)


@dataclass
class Service:
    """A service: name, layer, domain (decides its VPC), routes and how it authenticates."""

    name: str
    tier: int
    domain: str
    routes: tuple[Route, ...] = ()
    lang: str = "java"
    auth: str = "iam"  # iam | spiffe: how it identifies itself when it calls others
    http2: bool = False
    versions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def kebab(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "-", self.name).lower()

    def svc_id(self, env: str) -> str:
        return "svc-" + hid(f"{env}/svc/{self.name}", 17)

    def svc_arn(self, env: EnvSpec) -> str:
        return f"arn:aws:vpc-lattice:{env.region}:{env.account}:service/{self.svc_id(env.name)}"

    def host(self, env: EnvSpec) -> str:
        return (f"{self.kebab}-{self.svc_id(env.name)[4:]}.{hid(env.name + self.name, 7)}"
                f".vpc-lattice-svcs.{env.region}.on.aws")

    def tg_id(self, env: str, version: str) -> str:
        return "tg-" + hid(f"{env}/tg/{self.name}/{version}", 17)

    def tg_arn(self, env: EnvSpec, version: str) -> str:
        return f"arn:aws:vpc-lattice:{env.region}:{env.account}:targetgroup/{self.tg_id(env.name, version)}"

    def role_name(self, env: str) -> str:
        return f"{env}-{self.name}-TaskRole-{hid(env + '/role/' + self.name, 12).upper()}"

    def role_arn(self, env: EnvSpec, session: str) -> str:
        return f"arn:aws:sts::{env.account}:assumed-role/{self.role_name(env.name)}/{session}"

    def spiffe(self, env: str) -> str:
        return f"spiffe://{env}.mesh.shop.example/ns/{self.domain}/sa/{self.kebab}"

    def cidr(self, env: EnvSpec, index: int) -> str:
        return f"10.{env.octet}.{index + 1}.0/24"


def hid(text: str, n: int) -> str:
    """A stable hex id of ``n`` chars derived from ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# --- routes -------------------------------------------------------------------------------

def R(method: str, pattern: str, weight: float, median: float, **kw: float | int | str) -> Route:
    """Shorthand for a Route."""
    return Route(method, pattern, weight, median, **kw)  # type: ignore[arg-type]


SPECIFIC_ROUTES: dict[str, tuple[Route, ...]] = {
    "PaymentService": (
        R("POST", "/v1/charges/{p:ch}", 0.45, 95, sigma=0.45, req_bytes=900, resp_bytes=1500, p4xx=0.004),
        R("GET", "/v1/charges/{p:ch}", 0.25, 22, sigma=0.4, resp_bytes=1400, p4xx=0.006),
        R("POST", "/v1/charges", 0.14, 120, sigma=0.45, req_bytes=1100, resp_bytes=1500, p4xx=0.01),
        R("POST", "/v1/refunds", 0.08, 110, req_bytes=600, resp_bytes=800, p4xx=0.01),
        R("GET", "/v1/payment_methods/{p:pm}", 0.08, 15, resp_bytes=700, p4xx=0.01),
    ),
    "PaymentGatewayAdapter": (
        R("POST", "/gateway/v2/authorize", 0.5, 180, sigma=0.5, req_bytes=1300, resp_bytes=900, p4xx=0.002),
        R("POST", "/gateway/v2/capture/{hex}", 0.35, 150, sigma=0.5, req_bytes=700, resp_bytes=600, p4xx=0.002),
        R("POST", "/gateway/v2/refund/{hex}", 0.15, 170, req_bytes=700, resp_bytes=600, p4xx=0.002),
    ),
    "OrderService": (
        R("GET", "/orders/{num}", 0.4, 18, resp_bytes=2600, p4xx=0.01),
        R("POST", "/orders", 0.2, 65, req_bytes=2200, resp_bytes=900, p4xx=0.015),
        R("GET", "/orders/{num}/items", 0.15, 25, resp_bytes=3800),
        R("PATCH", "/orders/{num}/status", 0.1, 30, req_bytes=250, resp_bytes=400),
        R("GET", "/customers/{num}/orders", 0.15, 40, resp_bytes=6400, query="limit=20"),
    ),
    "OrdersReporting": (
        R("GET", "/v1/reports/{uuid}", 0.5, 220, sigma=0.7, resp_bytes=24000),
        R("POST", "/v1/reports", 0.3, 480, sigma=0.7, req_bytes=600, resp_bytes=700),
        R("GET", "/v1/exports/{uuid}", 0.2, 350, sigma=0.8, resp_bytes=96000),
    ),
    "CheckoutService": (
        R("POST", "/v1/checkout/sessions", 0.35, 140, req_bytes=1800, resp_bytes=1200, p4xx=0.02),
        R("GET", "/v1/checkout/sessions/{uuid}", 0.3, 35, resp_bytes=1600),
        R("POST", "/v1/checkout/sessions/{uuid}/confirm", 0.25, 260, sigma=0.45, req_bytes=900, resp_bytes=1100, p4xx=0.02),
        R("DELETE", "/v1/checkout/sessions/{uuid}", 0.1, 20, resp_bytes=120),
    ),
    "CartService": (
        R("GET", "/v1/carts/{uuid}", 0.45, 9, resp_bytes=2100, p4xx=0.02),
        R("POST", "/v1/carts/{uuid}/items", 0.3, 22, req_bytes=400, resp_bytes=2200, p4xx=0.02),
        R("DELETE", "/v1/carts/{uuid}/items/{num}", 0.15, 14, resp_bytes=2000, p4xx=0.03),
        R("PUT", "/v1/carts/{uuid}", 0.1, 25, req_bytes=1500, resp_bytes=2100),
    ),
    "InventoryService": (
        R("GET", "/v1/stock/{num}", 0.55, 6, sigma=0.4, resp_bytes=350, p4xx=0.01),
        R("POST", "/v1/reservations", 0.25, 18, req_bytes=500, resp_bytes=300, p4xx=0.02),
        R("DELETE", "/v1/reservations/{uuid}", 0.1, 12, resp_bytes=80),
        R("GET", "/v1/warehouses/{num}/stock", 0.1, 35, resp_bytes=9000),
    ),
    "ShippingService": (
        R("POST", "/v1/shipments", 0.3, 85, req_bytes=1200, resp_bytes=900, p4xx=0.015),
        R("GET", "/v1/shipments/{p:shp}", 0.35, 20, resp_bytes=1300),
        R("POST", "/v1/rates/quote", 0.35, 70, req_bytes=700, resp_bytes=1100, p4xx=0.01),
    ),
    "CarrierGateway": (
        R("POST", "/v1/carriers/rates", 0.5, 120, sigma=0.5, req_bytes=800, resp_bytes=1600, p4xx=0.005),
        R("POST", "/v1/carriers/labels", 0.25, 210, sigma=0.5, req_bytes=900, resp_bytes=5200, p4xx=0.005),
        R("GET", "/v1/carriers/tracking/{p:trk}", 0.25, 160, sigma=0.6, resp_bytes=1800, p4xx=0.02),
    ),
    "CatalogService": (
        R("GET", "/v1/products/{num}", 0.6, 12, resp_bytes=4200, p4xx=0.02),
        R("GET", "/v1/categories/{num}/products", 0.25, 30, resp_bytes=18000, query="page=1"),
        R("GET", "/v1/products/{num}/variants", 0.15, 15, resp_bytes=3000),
    ),
    "SearchService": (
        R("GET", "/v1/search", 0.8, 45, sigma=0.6, resp_bytes=14000, p4xx=0.01, query="q=shoes&page=1"),
        R("GET", "/v1/suggest", 0.2, 12, resp_bytes=900, query="q=sh"),
    ),
    "RecommendationService": (
        R("GET", "/v1/recommendations/users/{num}", 0.6, 38, sigma=0.55, resp_bytes=5200),
        R("GET", "/v1/recommendations/products/{num}/similar", 0.4, 30, resp_bytes=4800),
    ),
    "UserService": (
        R("GET", "/users/{num}", 0.6, 8, resp_bytes=1100, p4xx=0.01),
        R("PATCH", "/users/{num}", 0.1, 20, req_bytes=500, resp_bytes=1100),
        R("GET", "/users/{num}/addresses", 0.3, 10, resp_bytes=900),
    ),
    "AuthService": (
        R("POST", "/oauth2/token", 0.3, 25, req_bytes=700, resp_bytes=1500, p4xx=0.04),
        R("POST", "/oauth2/introspect", 0.6, 4, sigma=0.35, req_bytes=600, resp_bytes=400, p4xx=0.01),
        R("GET", "/.well-known/jwks.json", 0.1, 2, sigma=0.3, resp_bytes=2400, p4xx=0.0),
    ),
    "FraudService": (
        R("POST", "/v1/assessments", 0.8, 45, sigma=0.5, req_bytes=2400, resp_bytes=500, p4xx=0.003),
        R("GET", "/v1/assessments/{uuid}", 0.2, 8, resp_bytes=700),
    ),
    "PricingService": (
        R("POST", "/v1/prices/batch", 0.6, 14, req_bytes=1500, resp_bytes=2500, p4xx=0.005),
        R("GET", "/v1/prices/{num}", 0.4, 5, resp_bytes=300),
    ),
    "NotificationService": (
        R("POST", "/v1/notifications", 0.8, 30, req_bytes=1600, resp_bytes=200, p4xx=0.01),
        R("GET", "/v1/notifications/{uuid}", 0.2, 7, resp_bytes=600),
    ),
}

# (noun, id kind) of generic services; their routes are built by ``generic_routes``.
GENERIC_DOMAINS: dict[str, tuple[int, tuple[tuple[str, str, str], ...]]] = {
    # domain: (tier, ((name, noun, id kind), ...))
    "edge": (1, (("StorefrontBff", "pages", "num"), ("MobileBff", "screens", "num"),
                 ("PartnerApi", "partners", "uuid"), ("AdminPortal", "admin", "num"),
                 ("SellerPortal", "listings", "hex"), ("GraphqlGateway", "graphql", "num"))),
    "shop": (2, (("WishlistService", "wishlists", "uuid"), ("ReviewService", "reviews", "num"),
                 ("ReturnsService", "returns", "p:rtn"), ("LoyaltyService", "members", "num"),
                 ("PromotionService", "promotions", "p:promo"), ("CouponService", "coupons", "hex"),
                 ("GiftCardService", "giftcards", "p:gc"), ("SubscriptionService", "subscriptions", "p:sub"),
                 ("BundleService", "bundles", "num"), ("QuoteService", "quotes", "uuid"),
                 ("StoreLocatorService", "stores", "num"), ("SizeGuideService", "guides", "num"),
                 ("ProductQaService", "questions", "num"), ("CompareService", "comparisons", "uuid"),
                 ("PreorderService", "preorders", "uuid"), ("BackorderService", "backorders", "uuid"))),
    "orders": (3, (("OrderHistoryService", "history", "num"), ("InvoiceService", "invoices", "p:inv"),
                   ("TaxService", "taxes", "uuid"), ("CurrencyService", "rates", "num"),
                   ("FulfillmentService", "fulfillments", "uuid"), ("WarehouseService", "warehouses", "num"),
                   ("ReceiptService", "receipts", "p:rcpt"), ("DisputeService", "disputes", "p:dp"),
                   ("RefundService", "refunds", "p:re"), ("SettlementService", "settlements", "uuid"),
                   ("LedgerService", "entries", "uuid"), ("AddressValidationService", "addresses", "uuid"),
                   ("DeliveryEstimateService", "estimates", "num"), ("PickingService", "picklists", "num"),
                   ("PackingService", "packages", "num"), ("DropshipService", "dropships", "uuid"))),
    "catalog": (3, (("ProductService", "products", "num"), ("MediaService", "images", "hex"),
                    ("TaxonomyService", "categories", "num"), ("BrandService", "brands", "num"),
                    ("SellerService", "sellers", "num"), ("ContentService", "articles", "num"),
                    ("SearchIndexer", "documents", "hex"), ("RankingService", "rankings", "uuid"),
                    ("PersonalizationService", "profiles", "num"), ("ExperimentService", "experiments", "num"),
                    ("SeoService", "slugs", "num"), ("TranslationService", "translations", "hex"))),
    "identity": (3, (("ProfileService", "profiles", "num"), ("SessionService", "sessions", "uuid"),
                     ("ConsentService", "consents", "uuid"), ("MfaService", "challenges", "uuid"),
                     ("AccountService", "accounts", "num"), ("PermissionService", "grants", "uuid"),
                     ("CustomerSupportService", "tickets", "num"), ("ChatService", "conversations", "uuid"))),
    "platform": (4, (("EmailSender", "emails", "uuid"), ("SmsSender", "messages", "uuid"),
                     ("PushSender", "pushes", "uuid"), ("FeatureFlagService", "flags", "num"),
                     ("ConfigService", "configs", "num"), ("AuditLogService", "events", "uuid"),
                     ("RateLimiterService", "buckets", "hex"), ("CacheService", "keys", "hex"),
                     ("GeoIpService", "lookups", "num"), ("ImageResizer", "renditions", "hex"),
                     ("PdfRenderer", "documents", "uuid"), ("WebhookDispatcher", "deliveries", "uuid"),
                     ("EventBusBridge", "events", "uuid"), ("SchedulerService", "jobs", "uuid"),
                     ("IdGeneratorService", "ids", "num"), ("SecretsBroker", "leases", "uuid"),
                     ("MetricsCollector", "series", "num"), ("TracingCollector", "batches", "uuid"),
                     ("ExchangeRateAdapter", "quotes", "num"), ("AddressProviderAdapter", "matches", "uuid"),
                     ("TaxProviderAdapter", "calculations", "uuid"), ("KycProviderAdapter", "checks", "uuid"),
                     ("FraudScoreAdapter", "scores", "uuid"), ("SmsProviderAdapter", "sends", "uuid"),
                     ("EmailProviderAdapter", "sends", "uuid"), ("ErpConnector", "documents", "num"),
                     ("CrmConnector", "contacts", "num"), ("DataLakeExporter", "exports", "uuid"))),
}

SPECIFIC_LAYOUT: dict[str, tuple[int, str]] = {
    "CheckoutService": (2, "shop"), "CartService": (2, "shop"), "OrderService": (2, "orders"),
    "SearchService": (2, "catalog"), "CatalogService": (2, "catalog"),
    "RecommendationService": (2, "catalog"), "UserService": (2, "identity"),
    "ShippingService": (2, "orders"), "OrdersReporting": (2, "orders"),
    "PaymentService": (3, "payments"), "InventoryService": (3, "orders"),
    "PricingService": (3, "catalog"), "FraudService": (3, "payments"), "AuthService": (3, "identity"),
    "NotificationService": (3, "platform"), "PaymentGatewayAdapter": (4, "payments"),
    "CarrierGateway": (4, "orders"),
}

INGRESS = ("EdgeGateway", "PartnerGateway")
"""Layer 0: they call front ends but are not Lattice services themselves."""

SPIFFE_SERVICES = frozenset({
    "CheckoutService", "RecommendationService", "SearchService", "ReviewService", "MediaService",
    "RankingService", "PersonalizationService", "ChatService", "EventBusBridge", "GraphqlGateway",
})
"""Services that identify themselves with an X.509 SVID (SPIFFE ID in callerX509SANURI)."""

UNAUTHENTICATED_IN_STAGING = frozenset({"SellerPortal", "ContentService", "SchedulerService"})
"""In staging these call without any principal; only their source CIDR names them."""

HTTP2 = frozenset({"SearchService", "RecommendationService", "RankingService", "PricingService",
                   "FeatureFlagService", "ConfigService", "IdGeneratorService", "CacheService"})
LANGS = ("java", "go", "python", "node", "kotlin")

TIER_MEDIAN_MS = {1: 60.0, 2: 30.0, 3: 12.0, 4: 25.0}


def generic_routes(name: str, noun: str, kind: str, tier: int) -> tuple[Route, ...]:
    """2 to 6 plausible REST routes over ``noun`` with ids of ``kind``."""
    h = int(hid("routes/" + name, 8), 16)
    base = TIER_MEDIAN_MS[tier] * (0.5 + (h % 100) / 66)
    tok = "{" + kind + "}"
    menu = [
        R("GET", f"/v1/{noun}/{tok}", 0.45, base * 0.6, resp_bytes=1800),
        R("POST", f"/v1/{noun}", 0.2, base * 1.6, req_bytes=1200, resp_bytes=600, p4xx=0.02),
        R("GET", f"/v1/{noun}", 0.15, base * 1.2, resp_bytes=8000, query="limit=50"),
        R("PUT", f"/v1/{noun}/{tok}", 0.1, base * 1.4, req_bytes=1400, resp_bytes=700),
        R("DELETE", f"/v1/{noun}/{tok}", 0.05, base * 0.8, resp_bytes=90, p4xx=0.03),
        R("GET", f"/v1/{noun}/{tok}/history", 0.05, base * 2.0, resp_bytes=12000),
    ]
    count = 2 + h % 5
    return tuple(menu[:count])


def services() -> list[Service]:
    """Every service (ingress callers included), in a stable order."""
    out: list[Service] = [Service(n, 0, "edge", (), lang="go") for n in INGRESS]
    for name, (tier, domain) in SPECIFIC_LAYOUT.items():
        out.append(Service(name, tier, domain, SPECIFIC_ROUTES[name]))
    for domain, (tier, members) in GENERIC_DOMAINS.items():
        for name, noun, kind in members:
            out.append(Service(name, tier, domain, generic_routes(name, noun, kind, tier)))
    for i, svc in enumerate(out):
        svc.lang = LANGS[int(hid("lang/" + svc.name, 4), 16) % len(LANGS)]
        svc.auth = "spiffe" if svc.name in SPIFFE_SERVICES else "iam"
        svc.http2 = svc.name in HTTP2
        if svc.tier > 0:
            svc.versions = {"prod": ("v1", "v2") if svc.name == "PaymentService" else ("v1",),
                            "staging": ("v1",)}
    return out


# --- the call graph -----------------------------------------------------------------------

@dataclass(frozen=True)
class Edge:
    """caller -> callee in one env with a fan-out (callee calls per caller request).

    ``kind``: ``normal``; ``unknown`` (a principal the inventory cannot resolve);
    ``denied`` (an unknown principal that the service's auth policy refuses with 403).
    ``routes`` restricts the callee routes used (``"METHOD template"``), empty = all.
    """

    caller: str
    callee: str
    env: str
    fanout: float
    kind: str = "normal"
    principal: str = ""
    routes: tuple[str, ...] = ()
    tag: str = ""


INGRESS_EDGES: dict[str, dict[str, float]] = {
    "EdgeGateway": {"StorefrontBff": 0.45, "MobileBff": 0.33, "GraphqlGateway": 0.1,
                    "AdminPortal": 0.02, "SellerPortal": 0.03},
    "PartnerGateway": {"PartnerApi": 0.07},
}

CORE_EDGES: dict[str, dict[str, float]] = {
    "StorefrontBff": {"CatalogService": 0.9, "SearchService": 0.35, "CartService": 0.45,
                      "RecommendationService": 0.3, "UserService": 0.5, "CheckoutService": 0.3,
                      "AuthService": 0.6, "OrderService": 0.05, "WishlistService": 0.05,
                      "ReviewService": 0.1, "ContentService": 0.1, "StoreLocatorService": 0.02},
    "MobileBff": {"CatalogService": 0.8, "SearchService": 0.45, "CartService": 0.4,
                  "RecommendationService": 0.4, "UserService": 0.4, "CheckoutService": 0.3,
                  "AuthService": 0.5, "OrderService": 0.08, "LoyaltyService": 0.1,
                  "WishlistService": 0.08, "PushSender": 0.02},
    "GraphqlGateway": {"CatalogService": 1.0, "SearchService": 0.3, "CartService": 0.3,
                       "UserService": 0.3, "OrderService": 0.1, "ReviewService": 0.2, "CheckoutService": 0.1,
                       "ProductQaService": 0.1, "CompareService": 0.05},
    "PartnerApi": {"OrderService": 0.5, "CatalogService": 0.5, "InventoryService": 0.3,
                   "ShippingService": 0.2, "AuthService": 1.0, "WebhookDispatcher": 0.3},
    "AdminPortal": {"OrdersReporting": 0.8, "OrderService": 0.5, "UserService": 0.5,
                    "CustomerSupportService": 0.4, "AuthService": 1.0, "DisputeService": 0.1},
    "SellerPortal": {"CatalogService": 0.6, "InventoryService": 0.4, "OrdersReporting": 0.3,
                     "SellerService": 0.6, "AuthService": 1.0, "MediaService": 0.2},
    "CheckoutService": {"CartService": 1.0, "PricingService": 1.0, "InventoryService": 1.0,
                        "PaymentService": 2.5, "FraudService": 0.8, "TaxService": 1.0,
                        "ShippingService": 0.6, "OrderService": 0.7, "PromotionService": 0.5,
                        "AddressValidationService": 0.5, "CouponService": 0.3, "GiftCardService": 0.05},
    "OrderService": {"PaymentService": 1.2, "InventoryService": 0.3, "NotificationService": 0.3,
                     "InvoiceService": 0.2, "FulfillmentService": 0.2, "LedgerService": 0.1,
                     "OrderHistoryService": 0.2},
    "CartService": {"PricingService": 0.8, "InventoryService": 0.5, "CatalogService": 0.3,
                    "PromotionService": 0.2},
    "ShippingService": {"CarrierGateway": 0.8, "AddressValidationService": 0.3,
                        "DeliveryEstimateService": 0.3},
    "OrdersReporting": {"OrderHistoryService": 1.0, "DataLakeExporter": 0.2, "InvoiceService": 0.3},
    "CatalogService": {"ProductService": 1.0, "PricingService": 0.5, "MediaService": 0.4,
                       "InventoryService": 0.2, "TaxonomyService": 0.2, "BrandService": 0.1},
    "SearchService": {"RankingService": 1.0, "PersonalizationService": 0.5, "SearchIndexer": 0.05,
                      "TranslationService": 0.05},
    "RecommendationService": {"PersonalizationService": 1.0, "ProductService": 0.5,
                              "ExperimentService": 0.3},
    "UserService": {"ProfileService": 1.0, "AccountService": 0.3, "SessionService": 0.3,
                    "ConsentService": 0.05},
    "ReturnsService": {"RefundService": 0.6, "ShippingService": 0.3},
    "RefundService": {"SettlementService": 0.5, "LedgerService": 0.5},
    "PaymentService": {"PaymentGatewayAdapter": 0.7, "FraudService": 0.3, "LedgerService": 0.5,
                       "AuditLogService": 0.3, "IdGeneratorService": 0.2},
    "FraudService": {"FraudScoreAdapter": 0.6, "KycProviderAdapter": 0.05, "GeoIpService": 0.5},
    "AuthService": {"SessionService": 0.5, "MfaService": 0.05, "PermissionService": 0.3,
                    "SecretsBroker": 0.01},
    "NotificationService": {"EmailSender": 0.5, "SmsSender": 0.2, "PushSender": 0.4},
    "InventoryService": {"WarehouseService": 0.2, "EventBusBridge": 0.3},
    "PricingService": {"CurrencyService": 0.3, "CacheService": 0.6},
    "TaxService": {"TaxProviderAdapter": 0.5},
    "EmailSender": {"EmailProviderAdapter": 1.0},
    "SmsSender": {"SmsProviderAdapter": 1.0},
    "CurrencyService": {"ExchangeRateAdapter": 0.1},
    "AddressValidationService": {"AddressProviderAdapter": 0.5},
    "InvoiceService": {"PdfRenderer": 0.5},
    "FulfillmentService": {"WarehouseService": 0.6, "PickingService": 0.5, "PackingService": 0.5,
                           "DropshipService": 0.05},
    "CustomerSupportService": {"ChatService": 0.5, "CrmConnector": 0.3},
    "LedgerService": {"ErpConnector": 0.1},
    "WebhookDispatcher": {"EventBusBridge": 0.2},
}

RESTRICTED_CALLEES = frozenset({"PaymentService", "PaymentGatewayAdapter", "InventoryService",
                                "CarrierGateway", "OrdersReporting"})
"""Callees whose callers are exactly the hand-written ones (planted events depend on them)."""

INFRA_CALLEES = {"FeatureFlagService": 0.05, "ConfigService": 0.01}

UNKNOWN_PRINCIPALS = {
    "legacy": "arn:aws:iam::111111111111:user/legacy-batch-runner",
    "vendor": "arn:aws:iam::333333333333:user/vendor-catalog-sync",
    "denied": "arn:aws:iam::444444444444:user/external-audit-scanner",
}
"""Principals the inventory does not know: IAM users with long-lived keys, the classic finding.
Their source addresses (10.250.0.0/16) match no service CIDR, and being users, not roles, they
carry no role name the pipeline could fall back to: they resolve to ``unknown``."""


def edges(svcs: list[Service], *, planted: frozenset[str] | None = None) -> list[Edge]:
    """The call graph of every env (staging mirrors prod without the planted oddities).

    ``planted``: tags of the planted edges to include (policy_violation, denied,
    unknown_callers); None includes them all.
    """
    graph = {**INGRESS_EDGES, **{k: dict(v) for k, v in CORE_EDGES.items()}}
    _add_generic_edges(graph, svcs)
    out: list[Edge] = []
    for env in ENVS:
        for caller, callees in graph.items():
            out.extend(Edge(caller, callee, env.name, f) for callee, f in callees.items())
    out.extend(e for e in planted_edges() if planted is None or e.tag in planted)
    return out


def planted_edges() -> list[Edge]:
    """The policy violation, the unknown callers and the denied caller (prod only)."""
    return [
        Edge("OrdersReporting", "PaymentService", "prod", 0.8, tag="policy_violation",
             routes=("GET /v1/charges/{id}", "POST /v1/refunds")),
        Edge("unknown", "CatalogService", "prod", 0.004, kind="unknown",
             principal=UNKNOWN_PRINCIPALS["legacy"], tag="unknown_callers"),
        Edge("unknown", "ProductService", "prod", 0.004, kind="unknown",
             principal=UNKNOWN_PRINCIPALS["legacy"], tag="unknown_callers"),
        Edge("unknown", "PricingService", "prod", 0.002, kind="unknown",
             principal=UNKNOWN_PRINCIPALS["vendor"], tag="unknown_callers"),
        Edge("unknown", "PaymentService", "prod", 0.005, kind="denied",
             principal=UNKNOWN_PRINCIPALS["denied"], tag="denied",
             routes=("GET /v1/charges/{id}", "POST /v1/charges")),
    ]


def _add_generic_edges(graph: dict[str, dict[str, float]], svcs: list[Service]) -> None:
    """Give every service without callers 1-3 callers from the layers above, and infra calls."""
    called = {c for callees in graph.values() for c in callees}
    by_tier: dict[int, list[str]] = {}
    for s in svcs:
        by_tier.setdefault(s.tier, []).append(s.name)
    for s in svcs:
        if s.tier <= 1 or s.name in called or s.name in INFRA_CALLEES:
            continue
        pool = [n for t in range(1, s.tier) for n in by_tier[t] if n not in RESTRICTED_CALLEES]
        h = int(hid("callers/" + s.name, 8), 16)
        for k in range(1 + h % 3):
            caller = pool[(h // 7 + k * 13) % len(pool)]
            graph.setdefault(caller, {})[s.name] = 0.05 + ((h >> (k + 3)) % 30) / 100
    for s in svcs:
        if 1 <= s.tier <= 3 and s.name not in INFRA_CALLEES:
            graph.setdefault(s.name, {}).update(INFRA_CALLEES)


def edge_rates(edge_list: list[Edge]) -> list[float]:
    """Calls per ingress request of each edge, fan-outs propagated down the layers."""
    inbound: dict[tuple[str, str], float] = {}
    for _ in range(12):  # the graph is a DAG a few layers deep: this converges
        nxt: dict[tuple[str, str], float] = {}
        for e in edge_list:
            src = 1.0 if e.caller in INGRESS or e.kind != "normal" else inbound.get((e.caller, e.env), 0.0)
            nxt[(e.callee, e.env)] = nxt.get((e.callee, e.env), 0.0) + src * e.fanout
        if nxt == inbound:
            break
        inbound = nxt
    return [
        (1.0 if e.caller in INGRESS or e.kind != "normal" else inbound.get((e.caller, e.env), 0.0)) * e.fanout
        for e in edge_list
    ]
