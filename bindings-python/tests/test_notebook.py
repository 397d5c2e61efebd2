"""examples/notebook.ipynb runs headless (nbclient, the venv's python3 kernel) against the
endpoint; results render as HTML tables, progress as a bar or text."""

from __future__ import annotations

from pathlib import Path

import pytest

import nbformat
import nbclient
import ipykernel  # noqa: F401  (the kernel the notebook runs on)

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebook.ipynb"


@pytest.mark.timeout(180)
def test_example_notebook_runs(monkeypatch, child_env, tmp_path):
    for key in ("PSREMOTE_URL", "PSREMOTE_USER", "PSREMOTE_PASSWORD", "PSREMOTE_TRUSTED_HOSTS"):
        monkeypatch.setenv(key, child_env[key])
    # Keep the kernel's runtime files out of the home directory.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    code = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    html = [o["data"]["text/html"] for c in code for o in c.outputs if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    # The Get-ChildItem result and a single object both render as tables.
    assert any("<table>" in h and "FullName" in h for h in html)
    streams = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "copying" in streams  # the progress display
    assert "<PSResult state=Completed" in streams
    assert "first" in streams and "second" in streams
    results = [o["data"]["text/plain"] for c in code for o in c.outputs if o.output_type == "execute_result"]
    assert "[[0], [1], [2]]" in results
