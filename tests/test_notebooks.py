"""Every notebook runs top to bottom on a fresh set-up (each asserts on its own output)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_here() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01-quickstart.ipynb", "02-classic-sweeps.ipynb", "03-paper-results.ipynb", "04-sim-vs-measured.ipynb",
        "05-kafka-sim-vs-measured.ipynb",
    ]  # fmt: skip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # papermill-style: results go to a fresh folder
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace('"../results"', repr(str(tmp_path)))
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
