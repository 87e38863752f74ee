"""The notebooks in notebooks/ run top to bottom against the demo scenario (headless, nbclient)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.slow


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "notebooks" / "make_notebooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_notebooks_and_they_match_their_generator() -> None:
    generator = _generator()
    assert len(NOTEBOOKS) >= 3
    assert {p.name for p in NOTEBOOKS} == set(generator.NOTEBOOKS)
    for path in NOTEBOOKS:
        written = json.loads(path.read_text(encoding="utf-8"))
        expected = json.loads(nbformat.writes(generator.build(generator.NOTEBOOKS[path.name])))
        assert written == expected, f"{path.name} differs from notebooks/make_notebooks.py: run it again"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_against_the_scenario(path: Path, scenario: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    lake, _ = scenario
    monkeypatch.setenv("MESHLENS_DATA", str(lake.root))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") in ("execute_result", "display_data", "stream") for o in outputs)
