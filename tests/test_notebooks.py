"""Every notebook in colabs/ executes top to bottom in smoke mode (SYMOPTAX_SMOKE=1)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

COLABS = Path(__file__).resolve().parents[1] / "colabs"
NOTEBOOKS = sorted(COLABS.glob("*.ipynb"))


def test_the_three_notebooks_exist():
  assert {p.name for p in NOTEBOOKS} >= {"pretrain_tpu.ipynb", "compare_stacks.ipynb",
                                         "custom_hybrid.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, tmp_path_factory, monkeypatch):
  monkeypatch.setenv("SYMOPTAX_SMOKE", "1")
  monkeypatch.setenv("SYMOPTAX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("SYMOPTAX_RUNS", str(tmp_path))  # not the checkout's runs/
  nb = nbformat.read(path, as_version=4)
  # Runs from the notebook's folder, as Jupyter does; the setup cell finds the repository.
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(COLABS)}})
  client.execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "smoke mode: True" in text
