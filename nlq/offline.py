"""The offline backend: intent and slots from keywords, SQL from the templates of nlq.sqlgen.

No model and no network. A question is read in three passes, none of them a whole-sentence
pattern, so that unseen phrasings work:

1. time expressions are found and cut out (nlq.timeexpr), then env words, versions, a route or
   path, a principal, an account, a namespace, and service names (nlq.entities, fuzzy);
2. the intent comes from keywords in a fixed priority: diagnosis ("why ... failing/slow"),
   exceptions (spans), set difference ("but not"), access (principals, denied, unauthenticated,
   unknown callers, last call), traffic between two services, callers / callees, then a metric
   question (volume, rate, peak, bytes, errors, client errors, latency percentiles) with its
   breakdown ("by version", "which route", "per hour"), top-k / argmax and comparisons of two
   windows, versions or callers;
3. the slots fill one template.

``translate`` returns a ``Plan``: the SQL (or a diagnosis playbook to run, or a clarification).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from meshlens.timewin import Window, iso
from nlq import sqlgen, timeexpr
from nlq.entities import (Mention, Vocabulary, find_env, find_principal, find_route,
                          find_services, find_versions, suggestions, unknown_names)
from nlq.sqlgen import Aggregate

SUGGESTED_QUESTIONS = (
    "who calls PaymentService?",
    "error rate of PaymentService by version in the last 24 hours",
    "p99 latency of CheckoutService yesterday",
    "top 5 services by errors today",
    "which principals accessed PaymentService last week?",
    "requests per hour to InventoryService",
    "why is PaymentService failing?",
)
ALL_TIME = timedelta(days=400)


@dataclass
class Plan:
    """What the offline backend decided: SQL to run, a playbook, or a question back."""

    intent: str
    window: Window
    sql: str = ""
    explanation: str = ""
    clarification: str | None = None
    error: str | None = None
    service: str | None = None
    slots: dict[str, object] = field(default_factory=dict)


@dataclass
class Question:
    """A question with its slots filled."""

    text: str
    lowered: str
    now: datetime
    windows: list[Window]
    relative: timedelta | None
    services: list[Mention]
    env: str | None
    versions: list[str]
    method: str | None
    route: str | None
    principal: str | None
    account: str | None
    namespace: str | None
    unknown: list[str]
    explicit_time: bool

    @property
    def window(self) -> Window:
        return self.windows[0] if self.windows else timeexpr.default_window(self.now)

    def has(self, *patterns: str) -> bool:
        """True when any regex in ``patterns`` occurs in the question (lower-cased)."""
        return any(re.search(p, self.lowered) for p in patterns)


def read(text: str, *, now: datetime, vocab: Vocabulary) -> Question:
    """Fill the slots of ``text``."""
    times = timeexpr.find_all(text, now=now)
    masked = [(t.start, t.end) for t in times]
    method, route = find_route(text, vocab)
    path_spans = [(m.start(), m.end()) for m in re.finditer(r"/[A-Za-z0-9_\-\.{}/]+", text)]
    masked_all = masked + path_spans
    services = find_services(text, vocab, masked=masked_all)
    principal = find_principal(text, vocab)
    if principal:
        services = [s for s in services if s.text.lower() not in principal.lower()]
    account = _match(r"\b(\d{12})\b", text)
    namespace = _match(r"\bnamespace\s+['\"]?([a-z0-9\-]+)|\bns/([a-z0-9\-]+)", text.lower())
    return Question(
        text=text, lowered=text.lower(), now=now,
        windows=[t.window for t in times if t.window is not None],
        relative=next((t.relative for t in times if t.relative is not None), None),
        services=services, env=find_env(_cut(text, masked_all), vocab),
        versions=find_versions(_cut(text, path_spans), vocab), method=method, route=route, principal=principal,
        account=account, namespace=namespace,
        unknown=unknown_names(text, vocab, services, masked=masked_all),
        explicit_time=bool(times),
    )


def _match(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text)
    return next((g for g in m.groups() if g), None) if m else None


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for a, b in spans:
        chars[a:b] = [" "] * (b - a)
    return "".join(chars)


# -- intent ---------------------------------------------------------------------------------

DIAGNOSIS = (r"\bcanary\b.*\b(healthy|ok|okay|good|bad|failing|working|broken|doing)\b",
             r"\b(is|are)\b.*\b(healthy|unhealthy|okay)\s*\??$", r"\bhow is\b.*\bcanary\b",
             r"\bwhy\b.*\b(fail|error|broken|slow|down|degrad|5\d\d|canary|latenc|wrong|bad|timeout|unhealthy|flak|sick)",
             r"\bwhat'?s? (is )?(wrong|going on|happening) with\b", r"\bdiagnos", r"\broot cause\b",
             r"\bwhat happened to\b", r"\bwhy (is|are|was|were|does|did) .*\b(canary|v\d)\b",
             r"\bhealth ?check\b", r"\binvestigate\b", r"\btroubleshoot")
EXCEPTIONS = (r"\bexception", r"\bstack ?trace", r"\berror types?\b", r"\bthrows?\b(?!.*\b(5\d\d|5xx|4xx|errors?)\b)",
              r"^(?!.*\b(5\d\ds?|5xx|4xx)\b).*\bthrown\b")
SET_DIFF = (r"\bbut not\b", r"\b(hasn'?t|haven'?t|has not|have not)\b.*\b(last|past|since|today|yesterday)\b", r"\bno longer\b", r"\bstopped (calling|sending|using)\b", r"\bnot (since|anymore|any more)\b",
            r"\bbut (haven'?t|hasn'?t|didn'?t|did not|have not|has not)\b")
ACCESS = (r"\bprincipal", r"\bidentit", r"\baccess(ed|ing)?\b", r"\biam\b", r"\barn\b", r"\bspiffe\b",
          r"\brole\b", r"\bauthenticat", r"\bdenied\b", r"\bdeny\b", r"\brejected\b", r"\b403\b",
          r"\bunknown callers?\b", r"\bunresolved\b", r"\bunidentified\b", r"\bwho (was|were)\b.*\bdenied",
          r"\blast (call|called|seen|time)\b", r"\bwhen did\b.*\blast\b", r"\baccount\b", r"\bnamespace\b",
          r"\btouch(ed)?\b", r"\bunauth")
CALLERS = (r"\b(anything|anyone|everything|something|anybody|what|who|which(\s+\w+)?)\s+(is\s+|are\s+)?calling\b",
           r"\b(that|which|who)\s+(calls?|talks? to|uses|hits|depends on|invokes|reaches)\b",
           r"\b(what|which|who)\s+(calls|talks to|uses|hits|depends on|invokes|reaches|sends (requests|traffic|calls) to)\b",
           r"\bwho\b.*\b(call|talk|hit|use|depend|reach|send|invok|consum)", r"\bcallers?\b",
           r"\bcalled by\b", r"\bupstream", r"\bclients? of\b", r"\b(which|what) (services?|apps?|callers?)\b.*\b(call|talk|hit|use|depend|reach|send|invok)",
           r"\bdepends? on\b", r"\b(call|calls|calling|hit|hits|use|uses)\s*(?:the\s+)?$", r"\binbound\b", r"\bincoming\b")
CALLEES = (r"\bcallees?\b", r"\bdependenc", r"\bdownstream", r"\bdoes\b.*\b(call|depend|talk|use|hit|reach)",
           r"\bwhat does\b", r"\b(call|calls|talk|talks) to\b", r"\boutbound\b", r"\boutgoing\b", r"\bdepend on\b")
LIST_SERVICES = (r"\b(list|show|what|which|how many)\b.*\bservices\b.*\b(are there|exist|do we have|in the lake|known|seen|we have)\b",
                 r"^\s*(list|show)( me)?( all)?( the)? services\s*\??$", r"\bhow many services\b", r"\ball services\b")


def classify(q: Question) -> str:
    """The intent of a question, from keywords in a fixed priority."""
    if q.has(*DIAGNOSIS):
        return "diagnosis"
    if q.has(*EXCEPTIONS) and (q.has(r"\bexception", r"\bstack ?trace") or not q.has(r"\b5\d\ds?\b|\b5xx\b|\b4xx\b|\berrors\b")):
        return "exceptions"
    if q.has(*SET_DIFF) and len(q.windows) + (1 if q.relative else 0) >= 1:
        return "set_difference"
    if q.has(*ACCESS) or (q.principal and not q.has(r"\berror|latenc|p\d\d")):
        return "access"
    if len(q.services) >= 2 and q.has(r"\bbetween\b", r"\bboth directions\b", r"\beither direction\b"):
        return "between"
    if len(q.services) == 1 and q.has(r"\b(list|show|all|the)\s+(the\s+)?(callers|clients|upstreams)\b",
                                      r"^\s*(who|what) (calls|talks to)\b") and not _latency_words(q) \
            and not q.has(r"\b(most|least|highest|lowest|top|worst|fewest)\b"):
        return "callers"
    if _metric_words(q):
        return "metric"
    if q.has(*LIST_SERVICES) and not q.services:
        return "services"
    if q.services and _callee_phrasing(q):
        return "callees"
    if q.services and q.has(*CALLERS):
        return "callers"
    if q.has(*LIST_SERVICES):
        return "services"
    if q.services or q.has(r"\b(request|traffic|volume|busiest|top|most|rps|qps)\b"):
        return "metric"
    return "unknown"


def _metric_words(q: Question) -> bool:
    return q.has(r"\berror", r"\b5\d\ds?\b|\b5xx\b|\b4xx\b|\b4\d\ds?\b", r"\bfail", r"latenc", r"\bp\d\d\b",
                 r"\bpercentile", r"\bslow", r"\bfast", r"\bduration", r"response time", r"\bhow long",
                 r"\bbytes?\b", r"\bbandwidth", r"\b(gb|mb|kb)\b", r"\bhow many (requests|calls)",
                 r"\btransferr?(ed|s)?\b", r"\bhow much data\b",
                 r"\bpeak\b", r"\brps\b|\bqps\b|per second", r"\bthroughput", r"\b(request|call) (rate|count|volume)",
                 r"\bnumber of (requests|calls)", r"\bcount of (requests|calls)", r"\bhourly\b", r"\bper hour\b",
                 r"\bby (version|route|endpoint|status|env|caller|hour)", r"\bstatus codes?\b", r"\bcompare",
                 r"\bvs\.?\b|\bversus\b", r"\bmedian\b", r"\bmean\b|\baverage\b|\bavg\b", r"\btop \d+",
                 r"\bbusiest\b", r"\bmost (requests|traffic|calls|errors)", r"\bhow much traffic\b",
                 r"\btraffic\b.*\b(to|from|of)\b")


def _latency_words(q: Question) -> bool:
    return q.has(r"latenc", r"\bp\d\d\b", r"\bpercentile", r"\bslow", r"\bduration", r"\bbytes?\b", r"\bpeak\b")


def _callee_phrasing(q: Question) -> bool:
    first = q.services[0]
    after = q.lowered[first.end:]
    before = q.lowered[:first.start]
    if re.search(r"\b(callees?|dependenc|downstream|outbound|outgoing)", q.lowered):
        return not re.search(r"\bupstream\b|\bcallers\b", q.lowered)
    if re.search(r"^\W*(call|calls|depend|depends|talk|talks|use|uses|hit|hits|reach|send|sends|invoke)\b", after) \
            and re.search(r"\b(what|which|who|whom)\b", before):
        return True
    return bool(re.search(r"'s (dependencies|deps|callees)", q.lowered))


# -- translation ------------------------------------------------------------------------------

def translate(text: str, *, now: datetime, vocab: Vocabulary, rollups: bool | str,
              identity_rollup: bool = True) -> Plan:
    """A plan for ``text``: SQL from a template, a playbook run, or a clarification.

    ``identity_rollup`` says whether the principal rollup is built (a lake rolled up before it
    existed has the others only); without it the principals question reads raw rows.
    """
    q = read(text, now=now, vocab=vocab)
    problem = _name_problem(q, vocab)
    if problem:
        return problem
    intent = classify(q)
    if intent == "unknown":
        return Plan("unknown", q.window, error=_cannot_answer(text))
    if intent == "access":
        return build_access(q, rollups=rollups if identity_rollup else False)
    return BUILDERS[intent](q, rollups=rollups)


def _name_problem(q: Question, vocab: Vocabulary) -> Plan | None:
    for mention in q.services:
        if mention.value is None:
            labelled = " or ".join(mention.candidates)
            return Plan("clarify", q.window, clarification=(
                f"'{mention.text}' matches more than one service: {labelled}. Which one did you mean?"),
                slots={"candidates": list(mention.candidates)})
    for name in q.unknown:
        hint = suggestions(name, vocab)
        tail = f" (did you mean {' or '.join(hint)}?)" if hint else ""
        return Plan("clarify", q.window, error=f"no service named {name}{tail}",
                    slots={"unknown": name, "suggestions": hint})
    return None


def _cannot_answer(text: str) -> str:
    examples = "; ".join(SUGGESTED_QUESTIONS[:5])
    return f"I cannot answer {text!r} offline. Questions I can answer look like: {examples}"


def _names(q: Question) -> list[str]:
    return list(dict.fromkeys(m.value for m in q.services if m.value))


def _roles(q: Question) -> tuple[str | None, str | None]:
    """(caller, callee) named in the question: "from A to B", "A calls B", "B from A"."""
    names = [m for m in q.services if m.value]
    if not names:
        return None, None
    if len(names) == 1:
        before = q.lowered[:names[0].start]
        served = re.search(r"\b(returned|served|answered|handled|thrown|raised|received|seen|logged)\s+by\s+(the\s+)?$", before)
        if not served and re.search(r"\b(from|by)\s+(the\s+)?$", before):
            return names[0].value, None
        return None, names[0].value
    a, b = names[0], names[1]
    before_a = q.lowered[:a.start]
    between = q.lowered[a.end:b.start]
    if re.search(r"\b(to|on|of|for|into|hitting|against)\s+(the\s+)?$", before_a) and re.search(r"\b(from|by)\b", between):
        return b.value, a.value
    return a.value, b.value


def _base_filters(q: Question) -> dict[str, str | list[str]]:
    filters: dict[str, str | list[str]] = {}
    if q.env:
        filters["env"] = q.env
    if q.route:
        filters["route"] = q.route
    if q.method:
        filters["method"] = q.method
    return filters


def _explain(what: str, q: Question, window: Window | None = None) -> str:
    window = window or q.window
    when = "" if q.explicit_time else " (no time given: the last 24 hours)"
    env = f" in {q.env}" if q.env else ""
    return f"{what}{env}, {window}{when}."


# -- builders ---------------------------------------------------------------------------------

def build_callers(q: Question, *, rollups: bool | str) -> Plan:
    service = _names(q)[0]
    agg = Aggregate(window=q.window, measures=["requests", "errors_5xx", "error_ratio"], dims=["caller"],
                    filters={"service": service, **_base_filters(q)}, order_by="requests")
    return Plan("callers", q.window, sqlgen.aggregate_sql(agg, rollups=rollups), service=service,
                explanation=_explain(f"Services that called {service}, busiest first", q))


def build_callees(q: Question, *, rollups: bool | str) -> Plan:
    service = _names(q)[0]
    agg = Aggregate(window=q.window, measures=["requests", "errors_5xx", "error_ratio"],
                    dims=["service"], filters={"caller": service, **_base_filters(q)}, order_by="requests")
    return Plan("callees", q.window, sqlgen.aggregate_sql(agg, rollups=rollups), service=service,
                explanation=_explain(f"Services that {service} called (its dependencies), busiest first", q))


def build_between(q: Question, *, rollups: bool | str) -> Plan:
    a, b = _names(q)[:2]
    where = [f"((caller = {sqlgen.quote(a)} AND service = {sqlgen.quote(b)}) OR "
             f"(caller = {sqlgen.quote(b)} AND service = {sqlgen.quote(a)}))"]
    agg = Aggregate(window=q.window, measures=["requests", "errors_5xx", "error_ratio", "p50_ms", "p99_ms"],
                    dims=["caller", "service"], filters=_base_filters(q), where=where, order_by="requests")
    return Plan("between", q.window, sqlgen.aggregate_sql(agg, rollups=rollups), service=a,
                explanation=_explain(f"Traffic between {a} and {b}, both directions", q))


def build_services(q: Question, *, rollups: bool | str) -> Plan:
    agg = Aggregate(window=q.window, measures=["requests", "errors_5xx", "error_ratio"], dims=["service"],
                    filters=_base_filters(q), order_by="requests")
    return Plan("services", q.window, sqlgen.aggregate_sql(agg, rollups=rollups),
                explanation=_explain("Services that received requests", q))


def build_set_difference(q: Question, *, rollups: bool | str) -> Plan:
    first, second = _two_windows(q)
    names = _names(q)
    service = names[0] if names else None
    filters = _base_filters(q)
    column = "caller" if service and not _callee_phrasing(q) else "service"
    if service:
        filters["service" if column == "caller" else "caller"] = service
    sql = sqlgen.set_difference_sql(column, Aggregate(first, ["requests"], filters=filters),
                                    Aggregate(second, ["requests"], filters=filters), rollups=rollups)
    what = f"{'Callers of' if column == 'caller' else 'Services called by'} {service}" if service else "Services"
    return Plan("set_difference", first, sql, service=service,
                explanation=f"{what} seen in {first} but not in {second}.",
                slots={"second_window": second})


def _two_windows(q: Question) -> tuple[Window, Window]:
    """The wider window first ("this month but not the last 3 days")."""
    if len(q.windows) >= 2:
        a, b = q.windows[:2]
        return (a, b) if a.seconds >= b.seconds else (b, a)
    if q.windows and q.relative:
        w = q.windows[0]
        return Window(w.start - q.relative, w.start), w
    only = q.windows[0] if q.windows else timeexpr.default_window(q.now)
    return timeexpr.default_window(q.now) if only.seconds < 86400 else Window(only.start - only.end + only.start, only.start), only


# -- access -----------------------------------------------------------------------------------

def build_access(q: Question, *, rollups: bool | str) -> Plan:
    names = _names(q)
    service = names[0] if names else None
    if q.has(r"\bdenied\b", r"\bdeny\b", r"\b403\b", r"\brejected\b", r"\bforbidden\b", r"\bblocked\b"):
        return _denied(q, service)
    if q.has(r"\bunauth", r"\bnot authenticated\b", r"\bwithout (auth|a principal|credentials)", r"\banonymous\b"):
        return _unauthenticated(q, service)
    if q.has(r"\bunknown callers?\b", r"\bunresolved\b", r"\bunidentified\b", r"\bunknown (principals?|identit)"):
        return _unknown_callers(q, service)
    if q.principal or q.account or q.namespace:
        return _by_principal(q, service)
    return _principals_of(q, service, rollups=rollups)


def _window_or_all(q: Question) -> Window:
    return q.window if q.explicit_time else Window(q.now - ALL_TIME, q.now)


def _service_pred(service: str | None) -> list[str]:
    return [f"service = {sqlgen.quote(service)}"] if service else []


def _env_pred(q: Question) -> list[str]:
    return [f"env = {sqlgen.quote(q.env)}"] if q.env else []


def _principals_of(q: Question, service: str | None, *, rollups: bool | str = False) -> Plan:
    where = _service_pred(service) + _env_pred(q)
    if q.route:
        where.append(f"route = {sqlgen.quote(q.route)}")
    if q.method:
        where.append(f"method = {sqlgen.quote(q.method)}")
    sql = _principals_from_rollup(q.window, where) if rollups and not (q.route or q.method) else None
    sql = sql or sqlgen.raw_group_sql(
        window=q.window, where=where, order="requests DESC, caller_principal",
        select=["caller_principal", "caller", "count(*) AS requests", "min(ts) AS first_seen", "max(ts) AS last_seen"],
        group=["caller_principal", "caller"])
    target = service or "any service"
    return Plan("principals", q.window, sql, service=service,
                explanation=_explain(f"Principals (identities) that called {target}{' ' + q.route if q.route else ''}", q))


def _principals_from_rollup(window: Window, where: list[str]) -> str | None:
    """The principals question over analytics.rollup_identity's tiles (built with the other rollups)."""
    from analytics.rollup_identity import tiles_text

    tiles = tiles_text(window, columns=("caller_principal", "caller", "service", "env", "requests",
                                        "first_seen", "last_seen"))
    if tiles is None:
        return None
    return (f"SELECT caller_principal, caller, sum(requests)::BIGINT AS requests, min(first_seen) AS first_seen, "
            f"max(last_seen) AS last_seen\nFROM (\n  {tiles}\n)"
            + (f"\nWHERE {' AND '.join(where)}" if where else "")
            + "\nGROUP BY caller_principal, caller\nORDER BY requests DESC, caller_principal")


def _by_principal(q: Question, service: str | None) -> Plan:
    window = _window_or_all(q)
    where = _service_pred(service) + _env_pred(q)
    if q.principal:
        where.append(f"caller_principal LIKE {sqlgen.quote('%' + q.principal + '%')}")
    if q.account:
        where.append(f"(caller_principal LIKE {sqlgen.quote('%:' + q.account + ':%')} OR account = {sqlgen.quote(q.account)})")
    if q.namespace:
        where.append(f"caller_principal LIKE {sqlgen.quote('%/ns/' + q.namespace + '/%')}")
    sql = sqlgen.raw_group_sql(
        window=window, where=where, order="last_seen DESC",
        select=["caller_principal", "caller", "service", "count(*) AS requests", "min(ts) AS first_seen",
                "max(ts) AS last_seen"], group=["caller_principal", "caller", "service"])
    who = q.principal or (f"account {q.account}" if q.account else f"namespace {q.namespace}")
    target = f" to {service}" if service else ""
    return Plan("principal_calls", window, sql, service=service,
                explanation=f"Calls by {who}{target}, latest first, {window}. No rows means no such calls.")


def _denied(q: Question, service: str | None) -> Plan:
    where = ["(coalesce(auth_denied_reason, '') <> '' OR failure_reason = 'ClientAccessDenied')"]
    where += _service_pred(service) + _env_pred(q)
    sql = sqlgen.raw_group_sql(
        window=q.window, where=where, order="requests DESC",
        select=["caller", "caller_principal", "service", "auth_denied_reason", "failure_reason",
                "count(*) AS requests", "max(ts) AS last_seen"],
        group=["caller", "caller_principal", "service", "auth_denied_reason", "failure_reason"])
    return Plan("denied", q.window, sql, service=service,
                explanation=_explain(f"Requests denied by auth policy{' on ' + service if service else ''}", q))


def _unauthenticated(q: Question, service: str | None) -> Plan:
    where = ["authenticated = false"] + _service_pred(service) + _env_pred(q)
    sql = sqlgen.raw_group_sql(
        window=q.window, where=where, order="requests DESC",
        select=["caller", "service", "env", "count(*) AS requests"], group=["caller", "service", "env"])
    return Plan("unauthenticated", q.window, sql, service=service,
                explanation=_explain("Requests without a principal or client certificate", q))


def _unknown_callers(q: Question, service: str | None) -> Plan:
    where = ["caller = 'unknown'"] + _service_pred(service) + _env_pred(q)
    sql = sqlgen.raw_group_sql(
        window=q.window, where=where, order="requests DESC",
        select=["caller_principal", "service", "count(*) AS requests", "max(ts) AS last_seen"],
        group=["caller_principal", "service"])
    return Plan("unknown_callers", q.window, sql, service=service,
                explanation=_explain("Requests whose caller the inventory cannot resolve", q))


def build_exceptions(q: Question, *, rollups: bool | str) -> Plan:
    names = _names(q)
    service = names[0] if names else None
    where = ["coalesce(exception_type, '') <> ''"] + _service_pred(service) + _env_pred(q)
    sql = sqlgen.raw_group_sql(
        window=q.window, table="spans", where=where, order="spans DESC, exception_type",
        select=["service", "exception_type", "count(*) AS spans", "max(start_ts) AS last_seen"],
        group=["service", "exception_type"])
    return Plan("exceptions", q.window, sql, service=service,
                explanation=_explain(f"Exceptions recorded in spans of {service or 'every service'}", q))


def build_diagnosis(q: Question, *, rollups: bool | str) -> Plan:
    names = _names(q)
    window = q.window if q.explicit_time else timeexpr.default_window(q.now)
    canary = q.has(r"\bcanary\b", r"\bnew version\b", r"\brollout\b", r"\bdeploy")
    return Plan("diagnosis", window, service=names[0] if names else None,
                slots={"canary": canary, "env": q.env, "slow": q.has(r"\bslow", r"latenc", r"timeout")},
                explanation="Diagnosis playbook")


# -- metric questions -------------------------------------------------------------------------

def build_metric(q: Question, *, rollups: bool | str) -> Plan:
    measures, order = _measures(q)
    dims, k = _dims(q, order)
    filters = _metric_filters(q, dims)
    ranked = dims and ("hour" not in dims and "minute" not in dims or k is not None or _superlative(q))
    agg = Aggregate(window=q.window, measures=measures, dims=dims, filters=filters,
                    order_by=order if ranked else None,
                    descending=not q.has(r"\b(least|lowest|fewest|fastest|quietest|smallest|best)\b"),
                    limit=k)
    if q.has(r"\bpeak\b", r"\bbusiest minute\b", r"\bmax(imum)? (rate|rps|per minute|requests per minute)",
             r"\bhighest (rate|rps)\b", r"\bper[- ]minute\b.*\b(max|peak|highest)"):
        sql = sqlgen.peak_sql(agg, rollups=rollups)
        return Plan("peak", q.window, sql, service=filters.get("service"),  # type: ignore[arg-type]
                    explanation=_explain(f"Busiest minute{_target(filters)}", q))
    comparison = _comparison_windows(q)
    if comparison:
        sql = sqlgen.compare_windows_sql(agg, comparison, rollups=rollups)
        return Plan("compare_windows", comparison[0][1], sql, service=filters.get("service"),  # type: ignore[arg-type]
                    explanation=f"{_describe(measures)}{_target(filters)}: "
                                + " vs ".join(f"{label} {w}" for label, w in comparison) + ".")
    sql = sqlgen.aggregate_sql(agg, rollups=rollups)
    by = f" by {', '.join(dims)}" if dims else ""
    return Plan("metric", q.window, sql, service=filters.get("service"),  # type: ignore[arg-type]
                explanation=_explain(f"{_describe(measures)}{_target(filters)}{by}", q),
                slots={"dims": dims, "measures": measures})


def _superlative(q: Question) -> bool:
    return q.has(r"\b(which|what) (hour|minute|time)\b.*\b(most|least|highest|lowest|worst|peak|busiest|slowest)\b",
                 r"\bwhen\b.*\b(most|highest|peak|worst)\b")


def _target(filters: dict[str, str | list[str]]) -> str:
    parts = [f"{k}={v}" for k, v in filters.items()]
    return f" for {', '.join(parts)}" if parts else ""


def _describe(measures: list[str]) -> str:
    return ", ".join(measures)


def _measures(q: Question) -> tuple[list[str], str]:
    """The columns to compute and the one to rank by."""
    pcts = [f"p{m}_ms" for m in re.findall(r"\bp(50|90|95|99)\b", q.lowered)]
    if q.has(r"\bmedian\b"):
        pcts.append("p50_ms")
    pct_words = {"99th": "p99_ms", "95th": "p95_ms", "90th": "p90_ms", "50th": "p50_ms"}
    pcts += [v for k, v in pct_words.items() if k in q.lowered]
    if pcts:
        pcts = list(dict.fromkeys(pcts))
        return ["requests", *pcts], pcts[0]
    if q.has(r"latenc", r"\bslow", r"\bfast", r"\bduration", r"response time", r"\bhow long", r"\bpercentile"):
        return ["requests", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms"], (
            "mean_ms" if q.has(r"\bmean\b|\baverage\b|\bavg\b") else "p99_ms")
    if q.has(r"\b(mean|average|avg)\b.*\b(time|ms|millis)"):
        return ["requests", "mean_ms", "max_ms"], "mean_ms"
    if q.has(r"\b4xx\b", r"\b4\d\d\b", r"\bclient errors?\b", r"\bclient[- ]side\b"):
        return ["requests", "client_errors_4xx", "client_error_ratio"], (
            "client_error_ratio" if q.has(r"\brate\b|\bratio\b|percent|%") else "client_errors_4xx")
    if q.has(r"\berror", r"\b5xx\b", r"\b5\d\ds?\b", r"\bfail", r"\bserver errors?\b"):
        return ["requests", "errors_5xx", "error_ratio"], (
            "error_ratio" if q.has(r"\brate\b|\bratio\b|percent|%|\bworst\b") else "errors_5xx")
    if q.has(r"\bbytes?\b", r"\bbandwidth", r"\b(gb|mb|kb)\b", r"\bdata (transfer|volume|sent|received)", r"\bpayload",
             r"\btransferr?(ed|s)?\b", r"\bhow much data\b", r"\bdata (in|out)\b"):
        return ["requests", "bytes_in", "bytes_out", "bytes_total"], "bytes_total"
    if q.has(r"\brps\b", r"\bqps\b", r"per sec", r"/s(ec)?\b", r"\bthroughput", r"\brate\b"):
        return ["requests", "rps"], "requests"
    return ["requests", "errors_5xx", "error_ratio"], "requests"


DIM_WORDS = (
    ("version", r"\b(by|per|each|every|which|what|across|between)\s+(the\s+)?versions?\b|\bversions?\b.*\b(most|worst|highest|slowest|compare)|\bv\d+\s+(vs\.?|versus|and|or)\s+v\d+"),
    ("route", r"\b(by|per|each|every|which|what|top|across)\s+(\d+\s+)?(the\s+)?(routes?|endpoints?|paths?|apis?|operations?)\b|\b(routes?|endpoints?)\b.*\b(most|worst|highest|slowest|busiest)"),
    ("caller", r"\b(by|per|each|every|which|what|top|across)\s+(\d+\s+)?(the\s+)?(callers?|clients?|upstreams?)\b|\bwho (sends|calls|makes|generates|hits)\b.*\b(most|more)|\bcallers?\b.*\b(most|worst|highest|busiest|compare|vs)"),
    ("env", r"\b(by|per|each|every|which|across)\s+(the\s+)?(envs?|environments?)\b|\bprod\b.*\b(vs\.?|versus|and|or|compared)\b.*\bstaging\b|\bstaging\b.*\b(vs\.?|versus|and|compared)\b.*\bprod\b"),
    ("status", r"\b(by|per|each|which|what)\s+(the\s+)?(http\s+)?status( codes?)?\b|\bstatus codes?\b|\bbreakdown of (errors|statuses)\b"),
    ("hour", r"\bhourly\b|\b(per|by|each|every|an)\s+hour\b|\bhour by hour\b|\bover time\b|\b(which|what) hour\b|\btime ?series\b|\btrend\b|\bwhen\b.*\b(most|peak|highest|worst|spike|start)"),
    ("minute", r"\bper minute\b|\bby minute\b|\bminute by minute\b|\beach minute\b"),
)


SUPERLATIVE = r"(slowest|fastest|busiest|quietest|worst|best|noisiest|biggest|largest|top|most \w+|failing|erroring)"
DIM_NOUNS = {"version": r"versions?", "route": r"(routes?|endpoints?|paths?|operations?)", "caller": r"(callers?|clients?)",
             "env": r"(envs?|environments?)", "hour": r"hours?"}


def _dims(q: Question, order: str) -> tuple[list[str], int | None]:
    dims = [name for name, pattern in DIM_WORDS if re.search(pattern, q.lowered)]
    dims += [name for name, noun in DIM_NOUNS.items()
             if name not in dims and re.search(rf"\b{SUPERLATIVE}\s+(\d+\s+)?{noun}\b", q.lowered)]
    if "minute" in dims and "hour" in dims:
        dims.remove("hour")
    names = _names(q)
    k = _top_k(q)
    if _service_ranking(q, names):
        dims.insert(0, "service")
    if "route" in dims and "method" not in dims and not q.method:
        dims.insert(dims.index("route"), "method")
    if len(q.versions) >= 2 and "version" not in dims:
        dims.append("version")
    if len(names) >= 2 and "caller" not in dims and q.has(r"\bcompare|\bvs\.?\b|\bversus\b|\band\b"):
        dims.append("caller")
    if k is None and q.has(r"\b(which|what)\b.*\b(most|least|highest|lowest|worst|best|slowest|fastest|busiest|quietest|fewest|biggest)\b|\bthe (most|slowest|busiest|worst)\b") and dims:
        k = 1 if not q.has(r"\b(which|what) (services|routes|versions|callers|endpoints)\b") else None
    return dims, k


def _service_ranking(q: Question, names: list[str]) -> bool:
    if q.has(r"\b(by|per|each|every|which|what|top|across|all)\s+(\d+\s+)?(the\s+)?services?\b", r"\bbusiest\b", r"\bnoisiest\b", r"\bslowest services\b",
             r"\bmost (requests|traffic|errors|calls)\b") and len(names) <= 1:
        if names and q.has(r"\b(which|what) services?\b.*\b(call|from)\b"):
            return False
        return not (names and not q.has(r"\b(which|what|top|busiest|all|each|per|by) (\d+ )?services?\b"))
    return False


def _top_k(q: Question) -> int | None:
    m = re.search(r"\btop\s+(\d+|three|five|ten)\b", q.lowered)
    if m:
        return {"three": 3, "five": 5, "ten": 10}.get(m.group(1)) or int(m.group(1))
    if re.search(r"\btop\b", q.lowered):
        return 10
    return None


def _metric_filters(q: Question, dims: list[str]) -> dict[str, str | list[str]]:
    filters = _base_filters(q)
    names = _names(q)
    if "caller" in dims and len(names) >= 2:
        target = names[-1] if q.has(r"\b(calling|call|to|against|into)\b") else names[0]
        callers = [n for n in names if n != target]
        filters.update({"service": target, "caller": callers if len(callers) > 1 else callers[0]})
        return filters
    caller, callee = _roles(q)
    if "service" in dims:
        callee = None
    if callee:
        filters["service"] = callee
    if caller:
        filters["caller"] = caller
    status = _status_code(q)
    if status and "status" not in dims:
        filters["status"] = status
    if q.versions:
        filters["version"] = q.versions if len(q.versions) > 1 else q.versions[0]
        if "version" in dims and len(q.versions) == 1:
            del filters["version"]
    if "env" in dims:
        filters.pop("env", None)
    return filters


def _status_code(q: Question) -> str | None:
    """An exact HTTP status named in the question ("503", "404s"), not a class like 5xx."""
    m = re.search(r"(?<![\d:./])\b([1-5]\d\d)s?\b(?![\d:])", _cut(q.text, [(0, 0)]))
    if not m or m.group(0) == "500s" or q.has(r"\b(top|last|past|first)\s+" + m.group(1)):
        return None
    return m.group(1)


def _comparison_windows(q: Question) -> list[tuple[str, Window]] | None:
    if len(q.windows) >= 2 and q.has(r"\bvs\.?\b", r"\bversus\b", r"\bcompar", r"\bthan\b", r"\bagainst\b", r"\band\b"):
        return [(f"window {i + 1}", w) for i, w in enumerate(q.windows[:2])]
    if q.relative and q.has(r"\bvs\.?\b", r"\bversus\b", r"\bcompar", r"\bthan\b", r"\bagainst\b", r"\bwith\b"):
        w = q.window
        before = Window(w.start - q.relative, w.start)
        return [("current", w), ("previous", before)]
    return None


BUILDERS = {
    "callers": build_callers, "callees": build_callees, "between": build_between,
    "services": build_services, "set_difference": build_set_difference, "access": build_access,
    "exceptions": build_exceptions, "diagnosis": build_diagnosis, "metric": build_metric,
}


def describe_window(window: Window) -> dict[str, str]:
    """JSON form of a window."""
    return {"start": iso(window.start), "end": iso(window.end)}
