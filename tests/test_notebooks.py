"""The notebooks in notebooks/: committed without outputs, and each one runs from top to bottom.

The notebooks are executed with nbclient in a fresh Python kernel (the interpreter running pytest), in a
temporary working folder, on their own tiny settings. Each must finish within NOTEBOOK_TIMEOUT_S on the
2-core CI machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
NOTEBOOK_TIMEOUT_S = 110  # whole notebook, well under two minutes
CELL_TIMEOUT_S = 100


def _stored_state(nb) -> list[str]:
    """Cells that carry outputs or an execution count (what 'Clear all outputs' removes)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has {len(cell.outputs)} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell.execution_count}")
    return problems


def test_notebooks_exist():
    """The quickstart, inference, metrics and knowledge-transfer notebooks are part of the documentation."""
    names = {p.name for p in NOTEBOOK_FILES}
    assert {"01_quickstart.ipynb", "02_inference.ipynb", "03_metrics.ipynb",
            "04_knowledge_transfer.ipynb"} <= names, f"found {sorted(names)}"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    """Notebooks are stored stripped: no outputs, no execution counts (clear them before committing)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    problems = _stored_state(nb)
    assert not problems, f"{path.name}: clear all outputs before committing: {'; '.join(problems)}"


def test_output_check_detects_outputs():
    """The check above fails on an executed notebook (so it can fail at all)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    assert _stored_state(nb) == []
    nb.cells[0].execution_count = 1
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    assert _stored_state(nb) == ["cell 0 has 1 output(s)", "cell 0 has execution_count 1"]


def _execute(nb, cwd: Path) -> None:
    # kernel "python3" starts `python -m ipykernel_launcher`; jupyter_client replaces `python` by
    # sys.executable, so the kernel runs in the interpreter (virtual environment) running the tests
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    """Every cell runs without error, and the whole notebook within NOTEBOOK_TIMEOUT_S."""
    # one thread per kernel: the CI machine has 2 cores and pytest-xdist runs 2 workers
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    # connection files and IPython's profile in the test's folder, not in $HOME
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(NOTEBOOKS.parent / "src"),
                                                                   os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()
    try:
        _execute(nb, tmp_path)
    except CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}")
    elapsed = time.monotonic() - start
    assert elapsed < NOTEBOOK_TIMEOUT_S, f"{path.name} took {elapsed:.0f} s (limit {NOTEBOOK_TIMEOUT_S} s)"
    print(f"{path.name}: {elapsed:.1f} s")
