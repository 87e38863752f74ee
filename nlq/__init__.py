"""Plain-language questions -> SQL that is shown, checked and run; offline by default, Claude when asked.

Modules:
    guard      the one SQL guard (sqlglot + DuckDB parse, allowed views, LIMIT, time limit,
               hardened connection); also used by `meshlens sql` and the dashboard's SQL box
    timeexpr   time expressions ("last week", "since 10:30", "between 9 and 10 this morning")
    entities   names in questions -> values in the lake (fuzzy, never a look-alike)
    sqlgen     SQL templates over the lake views (rollups when they answer, raw rows otherwise)
    offline    intent and slots from keywords -> a Plan (SQL, playbook or clarification)
    playbook   "why is X failing?": a fixed playbook of queries, ranked findings, a recommendation
    claude     the Claude backend (cached system prompt, one tool, one repair round, then offline)
    ask        ``ask(conn, question, now=..., backend=..., settings=..., client=...) -> Answer``

Conventions stated with every answer: UTC, half-open windows [start, end), no time given means
the last 24 hours, an error is a 5xx answer (4xx are client errors, reported apart).
"""
