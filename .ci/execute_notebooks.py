"""Execute every notebook (``notebooks/*.py``, jupytext percent format) as a real notebook.

Each is converted with jupytext and run by nbclient in a Jupyter kernel (figures inline, as a
reader sees them), from the repository root; the executed ``.ipynb`` files are written to the
folder given as the first argument (default: a temporary one); further arguments name the
notebooks to run (default: all). A cell that raises fails the
run (exit code 1) after the other notebooks have run.
"""

import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbclient
import nbformat

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    only = set(sys.argv[2:])
    for src in sorted((ROOT / "notebooks").glob("*.py")):
        if only and src.stem not in only:
            continue
        nb = jupytext.read(src)
        t0 = time.perf_counter()
        try:
            nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                    resources={"metadata": {"path": str(ROOT)}}).execute()
            status = "ok"
        except nbclient.exceptions.CellExecutionError as e:
            failed.append(src.name)
            status = f"FAILED\n{e}"
        nbformat.write(nb, out / f"{src.stem}.ipynb")
        print(f"== {src.name}: {status} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"executed notebooks in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
