"""Names in questions -> the values actually in the lake: services, versions, routes, principals, envs.

People type "PaymnetService", "the payments svc", "orders", "Orders reporting". Each service gets
keys: its lower-cased name and its *core* (the name without a generic suffix: Service, Svc,
Adapter, Api). A phrase of one to three words matches when its joined, lower-cased form (or
its core, or its singular) equals a key; only then is fuzzy matching (rapidfuzz, Indel ratio)
tried, on phrases of five letters or more that are not ordinary words of a question. A
look-alike never wins on a partial match: "payment" is the core of PaymentService only, so it
cannot become PaymentGatewayAdapter, and "orders" is OrderService, never OrdersReporting.
Two services equally close -> ``Ambiguous`` (the caller asks which); a CamelCase word that
matches nothing -> ``Unknown`` with did-you-mean suggestions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb
from rapidfuzz import fuzz, process

GENERIC_SUFFIXES = ("services", "service", "svcs", "svc", "adapter", "api")
FUZZY_MIN_LEN = 5
FUZZY_CUTOFF = 85.0
AMBIGUITY_MARGIN = 3.0
ENV_WORDS = {"prod": "prod", "production": "prod", "prd": "prod", "live": "prod",
             "staging": "staging", "stage": "staging", "stg": "staging", "preprod": "staging",
             "dev": "dev", "development": "dev", "test": "test", "qa": "qa"}
STOPWORDS = frozenset("""
a an the is are was were be been do does did of in on at to from for by with and or not no
who whom what which when where why how many much most least top per each every all any some
this that these those it its it's i me my we our you your they them their there here than then
calls call called calling caller callers callee callees requests request traffic errors error
rate rates ratio latency slow slowest fastest fast p50 p90 p95 p99 percentile percentiles
version versions route routes endpoint endpoints path paths status code codes service services
svc hour hours minute minutes day days week weeks month months today yesterday now last past
since between show list give tell find count number total volume bytes failing failed failure
failures broken down up why compare versus vs against over under during across into out
throws throw exceptions exception principal principals identity identities accessed access
env environment prod production staging stage canary deploy deployed dependencies dependency
depend depends downstream upstream talk talks talking hit hits hitting get gets got use uses
used using reach reaches touched touch denied unauthenticated unknown average avg mean max
median peak busiest quietest noisiest worst best highest lowest more less fewer same other
client clients server servers 4xx 5xx rps qps per-minute hourly daily series trend graph
morning afternoon evening night between and window breakdown broken split grouped group
""".split())

COMMON_WORDS = frozenset("""
account accounts session sessions config configs cache content media data event events image images
metrics tracing experiment experiments translation consent permission permissions profile profiles
scheduler audit user users price prices id ids auth rate rates time review reviews search product products
quote quotes brand brands store stores return returns ranking seller sellers chat secrets secret
compare compared comparing comparison
""".split())
"""Ordinary words that are also service cores: matched only when capitalized (``Account``)."""

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-\.']*")
_CAMEL = re.compile(r"^(?:[A-Z][a-z0-9]+){2,}[A-Za-z0-9]*$|^[A-Za-z]+(?:Service|Svc|Api|Gateway|Adapter|Broker|Sender)$")


@dataclass(frozen=True)
class Mention:
    """A service named in the question: the value (or the candidates when ambiguous)."""

    start: int
    end: int
    text: str
    value: str | None
    candidates: tuple[str, ...] = ()
    exact: bool = True


@dataclass
class Vocabulary:
    """The values in the lake that questions may name."""

    services: list[str]
    versions: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    principals: list[str] = field(default_factory=list)
    envs: list[str] = field(default_factory=list)
    principal_loader: Callable[[], list[str]] | None = field(default=None, repr=False)
    _keys: dict[str, set[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in self.services:
            for key in service_keys(name):
                self._keys.setdefault(key, set()).add(name)

    def all_principals(self) -> list[str]:
        """The principals, read on first use (a scan of raw rows on a big lake)."""
        if self.principal_loader is not None:
            self.principals, self.principal_loader = self.principal_loader(), None
        return self.principals

    def exact(self, key: str) -> set[str]:
        """Services with this key (lower-cased name or core)."""
        return self._keys.get(key, set())

    @property
    def keys(self) -> list[str]:
        return list(self._keys)


def service_keys(name: str) -> set[str]:
    """``PaymentService`` -> {paymentservice, payment}; ``OrdersReporting`` -> {ordersreporting}."""
    lower = re.sub(r"[^a-z0-9]", "", name.lower())
    keys = {lower}
    core = strip_suffix(lower)
    if len(core) >= 3:
        keys.add(core)
    return keys


def strip_suffix(key: str) -> str:
    """The key without one generic suffix (service, svc, adapter, api)."""
    for suffix in GENERIC_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix) + 2:
            return key[: -len(suffix)]
    return key


def variants(phrase: str) -> list[str]:
    """Keys a phrase may stand for: joined, without suffix, singular; best first."""
    joined = re.sub(r"[^a-z0-9]", "", phrase.lower())
    core = strip_suffix(joined)
    out = [joined, core]
    for form in (joined, core):
        if form.endswith("ies"):
            out.append(form[:-3] + "y")
        if form.endswith("es"):
            out.append(form[:-2])
        if form.endswith("s"):
            out.append(form[:-1])
    return list(dict.fromkeys(v for v in out if v))


def load_vocabulary(conn: duckdb.DuckDBPyConnection, *, source: str = "requests") -> Vocabulary:
    """Services (callee and caller), versions, routes, principals and envs in the lake (one scan)."""
    has_route = not source.startswith("edges")
    principals = "list(DISTINCT caller_principal)" if source == "requests" else "[]"
    row = conn.execute(
        f"SELECT list(DISTINCT service), list(DISTINCT caller), list(DISTINCT version), "
        f"{'list(DISTINCT route)' if has_route else '[]'}, list(DISTINCT env), {principals} FROM {source}"
    ).fetchone()
    services, callers, versions, routes, envs, found = (_clean(v) for v in (row or [None] * 6))
    names = sorted(set(services) | set(callers))
    return Vocabulary(services=[s for s in names if s != "unknown"], versions=versions,
                      routes=routes, principals=found, envs=envs)


def _clean(values: list[object] | None) -> list[str]:
    return sorted(str(v) for v in (values or []) if v not in (None, ""))


def find_services(text: str, vocab: Vocabulary, *, masked: Sequence[tuple[int, int]] = ()) -> list[Mention]:
    """Every service mention in ``text``, longest phrases first, in order of appearance."""
    words = [m for m in _WORD.finditer(text) if not any(a <= m.start() < b for a, b in masked)]
    used: set[int] = set()
    found: list[Mention] = []
    for size in (3, 2, 1):
        for i in range(len(words) - size + 1):
            span = range(i, i + size)
            if used & set(span) or not _contiguous(text, words[i:i + size]):
                continue
            mention = _match_phrase(text, words[i:i + size], vocab)
            if mention:
                found.append(mention)
                used |= set(span)
    return sorted(found, key=lambda m: m.start)


def _contiguous(text: str, words: list[re.Match[str]]) -> bool:
    return all(text[a.end():b.start()].strip(" -_") == "" for a, b in zip(words, words[1:]))


def _match_phrase(text: str, words: list[re.Match[str]], vocab: Vocabulary) -> Mention | None:
    start, end = words[0].start(), words[-1].end()
    phrase = text[start:end].strip(".'")
    if len(words) == 1 and (phrase.lower() in STOPWORDS or (phrase in COMMON_WORDS)):
        return None
    if all(w.group().lower() in STOPWORDS for w in words):
        return None
    if len(words) > 1 and any(w.group().lower() in STOPWORDS for w in words[:-1]):
        return None
    if len(words) > 1 and words[-1].group().lower() in STOPWORDS and words[-1].group().lower() not in GENERIC_SUFFIXES:
        return None
    for key in variants(phrase):
        hits = vocab.exact(key)
        if hits:
            names = tuple(sorted(hits))
            return Mention(start, end, phrase, names[0] if len(names) == 1 else None, names)
    return _fuzzy(start, end, phrase, vocab) or _prefix(start, end, phrase, words, vocab)


def _prefix(start: int, end: int, phrase: str, words: list[re.Match[str]], vocab: Vocabulary) -> Mention | None:
    """A first word shared by service names ("Email" -> EmailSender, EmailProviderAdapter)."""
    key = re.sub(r"[^a-z0-9]", "", phrase.lower())
    if len(words) != 1 or len(key) < 4 or key in STOPWORDS or key in COMMON_WORDS:
        return None
    hits = tuple(sorted(n for n in vocab.services if _first_word(n) == key))
    if not hits:
        return None
    return Mention(start, end, phrase, hits[0] if len(hits) == 1 else None, hits, exact=False)


def _first_word(name: str) -> str:
    m = re.match(r"[A-Z]?[a-z0-9]+", name)
    return m.group().lower() if m else name.lower()


def _fuzzy(start: int, end: int, phrase: str, vocab: Vocabulary) -> Mention | None:
    key = re.sub(r"[^a-z0-9]", "", phrase.lower())
    if len(key) < FUZZY_MIN_LEN or not vocab.keys:
        return None
    if phrase.islower() and " " not in phrase and strip_suffix(key) == key:
        return None  # an ordinary lower-case word ("compared") is never a typo of a name
    best: dict[str, float] = {}
    for form in {key, strip_suffix(key)}:
        for cand, score, _ in process.extract(form, vocab.keys, scorer=fuzz.ratio, limit=5,
                                              score_cutoff=FUZZY_CUTOFF):
            if len(cand) < FUZZY_MIN_LEN:
                continue
            for name in vocab.exact(cand):
                best[name] = max(best.get(name, 0.0), score)
    if not best:
        return None
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    close = tuple(n for n, s in ranked if ranked[0][1] - s < AMBIGUITY_MARGIN)
    return Mention(start, end, phrase, close[0] if len(close) == 1 else None, close, exact=False)


def unknown_names(text: str, vocab: Vocabulary, mentions: list[Mention],
                  *, masked: Sequence[tuple[int, int]] = ()) -> list[str]:
    """CamelCase words that look like service names but match nothing in the lake."""
    out = []
    for m in _WORD.finditer(text):
        if any(a <= m.start() < b for a, b in masked) or any(x.start <= m.start() < x.end for x in mentions):
            continue
        word = m.group().strip(".'")
        if _CAMEL.match(word) and word.lower() not in STOPWORDS:
            out.append(word)
    for m in re.finditer(r"\b([A-Za-z][A-Za-z0-9\-]{2,})[ \-](service|svc)\b", text, re.I):
        inside = any(x.start <= m.start() < x.end for x in mentions) or any(a <= m.start() < b for a, b in masked)
        if not inside and m.group(1).lower() not in STOPWORDS and m.group(1).lower() not in ("the", "a", "that", "this"):
            out.append(m.group(0))
    return out


def suggestions(name: str, vocab: Vocabulary, *, limit: int = 3) -> list[str]:
    """Services whose names look most like ``name`` (for "did you mean ...?")."""
    ranked = process.extract(name, vocab.services, scorer=fuzz.WRatio, limit=limit, score_cutoff=50)
    return [r[0] for r in ranked]


def find_env(text: str, vocab: Vocabulary) -> str | None:
    """The environment a question names ("in prod", "staging"), if any, as stored in the lake."""
    for word in re.findall(r"[a-z]+", text.lower()):
        env = ENV_WORDS.get(word)
        if env and (not vocab.envs or env in vocab.envs):
            return env
        if word in vocab.envs:
            return word
    return None


def find_versions(text: str, vocab: Vocabulary) -> list[str]:
    """Versions named like ``v2`` or ``version 2`` that exist in the lake."""
    found = []
    for m in re.finditer(r"\b(?:v|version\s*)(\d+(?:\.\d+)*)\b", text, re.I):
        value = "v" + m.group(1)
        if not vocab.versions or value in vocab.versions:
            found.append(value)
    return list(dict.fromkeys(found))


def find_route(text: str, vocab: Vocabulary) -> tuple[str | None, str | None]:
    """(method, route) of a path in the question, templated against the lake's routes."""
    method_m = re.search(r"\b(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\b", text)
    path_m = re.search(r"(?:(?<=\s)|^)(/[A-Za-z0-9_\-\.{}/]+)", text)
    if not path_m:
        return None, None
    path = path_m.group(1).rstrip(".?,")
    if path in vocab.routes:
        return (method_m.group(1) if method_m else None), path
    shaped = templated(path)
    matches = [r for r in vocab.routes if r == shaped or templated(r) == shaped]
    route = matches[0] if matches else shaped
    return (method_m.group(1) if method_m else None), route


def templated(path: str) -> str:
    """Ids in a path (numbers, uuids, hex, prefixed ids, ``{x}``) become ``{id}``."""
    out = []
    for seg in path.split("/"):
        if re.fullmatch(r"\{[^}]*\}|\d+|[0-9a-f]{8}-[0-9a-f\-]{27}|[0-9a-f]{16,}|[a-z]{1,5}_[0-9a-z]{6,}", seg):
            out.append("{id}")
        else:
            out.append(seg)
    return "/".join(out)


def find_principal(text: str, vocab: Vocabulary) -> str | None:
    """A principal (or a distinctive piece of one: role name, account, ``ns/x``) in the question."""
    tokens = [t.rstrip(".?,") for t in re.findall(r"[A-Za-z0-9:/_\-\.@]{6,}", text)]
    tokens = [t for t in tokens if ("-" in t or ":" in t) and not t.startswith("/")]
    if not tokens:
        return None
    principals = vocab.all_principals()
    return next((t for t in tokens if any(t in p for p in principals)), None)
