"""Shared fixtures: the shared samples folder, an empty lake, and the demo scenario lake.

The scenario lake is generated and taken in once per test session (it is the ground truth
most feature tests check against); tests must treat it as read-only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from meshlens.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

SCENARIO_END = datetime(2026, 11, 11, 0, 0, tzinfo=timezone.utc)
"""The test scenario covers 2026-11-10, the whole UTC day."""


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (read-only); tests that need it skip when it is absent, as in a fresh clone."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def samples_dir(shared_dir: Path) -> Path:
    return shared_dir / "samples"


@pytest.fixture()
def tmp_lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def scenario(tmp_path_factory: pytest.TempPathFactory):
    """(lake, truth) of the demo scenario for 2026-11-10, generated and taken in once."""
    from ingest.pipeline import ingest_paths
    from sample_logs.scenario import generate

    base = tmp_path_factory.mktemp("scenario")
    truth = generate(base / "logs", end=SCENARIO_END, hours=24, seed=7, scale=0.25)
    lake = Lake(base / "lake")
    ingest_paths(lake, [base / "logs"], inventory=base / "logs" / "meshlens.toml")
    return lake, truth
