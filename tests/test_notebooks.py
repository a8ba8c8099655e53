"""Executes the Colab notebooks headless on CPU in their small configuration (SMALL = True,
as committed), in order and in one working directory, as a user would run them: a failing
cell fails the test (nbclient raises CellExecutionError)."""

import os
import sys

import pytest

import nbclient
import nbformat
from helpers.paths import REPO

ROOT = REPO  # the repository root
NOTEBOOKS = ("pretraining", "finetuning", "export_and_serve")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("colab")


def test_notebooks_are_generated_from_the_script(tmp_path):
    """colab/*.ipynb are what scripts/make_notebooks.py writes (edit the script, not the
    JSON)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_notebooks
    finally:
        sys.path.pop(0)
    make_notebooks.OUT = str(tmp_path)
    make_notebooks.main()
    for name in NOTEBOOKS:
        written = nbformat.read(str(tmp_path / f"{name}.ipynb"), as_version=4)
        committed = nbformat.read(os.path.join(ROOT, "colab", f"{name}.ipynb"), as_version=4)
        assert [c.source for c in written.cells] == [c.source for c in committed.cells], name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, workdir, monkeypatch):
    notebook = nbformat.read(os.path.join(ROOT, "colab", f"{name}.ipynb"), as_version=4)
    assert any("SMALL = True" in cell.source for cell in notebook.cells)
    # The kernel must import this checkout's kbert even when it is not pip-installed.
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    expected = {"pretraining": "model directory: runs/colab_pretrain/model",
                "finetuning": "starting from",
                "export_and_serve": "runs/colab_saved_models/authors/1"}[name]
    assert expected in outputs, outputs[-2000:]
