"""``python -m dashboard.serve run dashboard/app.py ... -- --data DIR``: Streamlit, warmed at start.

Streamlit runs no line of the app before a visitor arrives, so a brand-new server's first page
would pay everything once: the imports, the DuckDB catalog, the first Plotly figure, and the
Overview's queries. This entry point is Streamlit's own command line (``meshlens dashboard``
starts it), plus a thread that does that work while the server starts: it imports the pages,
opens the cached connection (``dashboard.data``), runs the sidebar's and the Overview's cached
calls for the default window (so the first visit finds them cached) and starts
``dashboard.jobs.prewarm``. Nothing here computes a number: it calls what the pages call.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import threading
import time

from dashboard import state

log = logging.getLogger("meshlens.dashboard")
WARMED = threading.Event()
"""Set once the warm-up finished (or failed: the pages then pay what is missing)."""


def skip_repl_check() -> None:
    """Skip Streamlit's once-per-process "are we in a REPL?" check before the first element.

    It calls inspect.stack(), which looks up the source file of every loaded module (0.3-2 s on a
    new server's first page, the more the busier the machine); the dashboard only ever runs under
    ``streamlit run`` or AppTest, where the warning it guards does not apply.
    """
    from streamlit import delta_generator

    if hasattr(delta_generator, "_use_warning_has_been_displayed"):
        delta_generator._use_warning_has_been_displayed = True


def lake_of(argv: list[str]) -> str:
    """The lake of the app's arguments (after ``--``), as dashboard/app.py resolves it."""
    from meshlens import settings as settings_mod

    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--data", default=None)
    known, _ = parser.parse_known_args(app_args)
    return str(settings_mod.from_environment(data=known.data)["data"])


def warm(lake: str, *, runtime_wait: float = 60.0) -> float:
    """Pay a first visit's one-time costs now (no Streamlit session needed); returns seconds.

    Waits (up to ``runtime_wait`` s) for Streamlit's runtime first: the cached functions then
    find the server's cache storage, as they do when a page calls them.
    """
    started = time.perf_counter()
    try:
        _wait_for_runtime(runtime_wait)
        skip_repl_check()
        _import_pages()
        _first_visit_calls(lake)
    except Exception as exc:  # noqa: BLE001 - warming is best effort; the pages report real errors
        log.warning("dashboard warm-up stopped: %s", exc)
    finally:
        WARMED.set()
    return time.perf_counter() - started


def _wait_for_runtime(seconds: float) -> None:
    from streamlit import runtime

    deadline = time.monotonic() + seconds
    while not runtime.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _import_pages() -> None:
    from dashboard.state import VIEW_MODULES

    for name in VIEW_MODULES.values():
        importlib.import_module(f"dashboard.views.{name}")


def _first_visit_calls(lake: str) -> None:
    """The sidebar's and the Overview's cached calls for the default window, and the prewarm.

    Written as the sidebar (dashboard/app.py) and dashboard/views/overview.py write them:
    Streamlit's cache key is the arguments as passed, keywords in their order.
    """
    from analytics import findings
    from dashboard import charts, data, jobs, state
    from dashboard.views import overview
    from meshlens.lake import now_utc

    data.sync(lake)
    jobs.prewarm(lake)
    anchor = findings.anchor(data.latest_ts(lake), now=now_utc())
    window = state.window_for(state.DEFAULT_RANGE, anchor=anchor)
    data.counts(lake, window.start, window.end, by=("env",))
    data.red(lake, window.start, window.end, by=("service",), env=None)
    ctx = state.Ctx(data=lake, window=window, env=None, service=None, range_key=state.DEFAULT_RANGE,
                    anchor=anchor)
    data.red(ctx.data, ctx.start, ctx.end, env=ctx.env)
    series = data.counts(ctx.data, ctx.start, ctx.end, env=ctx.env, bucket=overview.bucket_for(ctx))
    data.counts(ctx.data, ctx.start, ctx.end, by=("caller", "service"), env=ctx.env)
    if series.height:
        charts.timeseries(series, y="requests", title="warm").to_json()
    _first_canary(ctx)


def _first_canary(ctx: state.Ctx) -> None:
    """The Canary page's chart of the canary it opens on (the first stored verdict), as it calls it."""
    from dashboard import data, jobs
    from dashboard.views import overview

    stored = jobs.stored_job(("canaries", ctx.data, ctx.start, ctx.end, ctx.env, None, data.fingerprint(ctx.data)))
    verdicts = stored.result() if stored is not None else []
    if verdicts:
        verdict = verdicts[0]
        data.red(ctx.data, ctx.start, ctx.end, by=("version",), service=verdict["service"],
                 env=verdict.get("env") or ctx.env, bucket=overview.bucket_for(ctx))


def _warm_and_say(lake: str) -> None:
    seconds = warm(lake)
    print(f"meshlens dashboard: warmed up in {seconds:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Warm in the background, run Streamlit's command line in the foreground."""
    args = sys.argv[1:] if argv is None else argv
    threading.Thread(target=_warm_and_say, args=(lake_of(args),), daemon=True, name="meshlens-warm").start()
    from streamlit.web import cli

    sys.argv = ["streamlit", *args]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
