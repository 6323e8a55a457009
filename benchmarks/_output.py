"""How every benchmark starts and writes: its command line, and figures written whole.

Scripts run as ``python benchmarks/<name>.py`` import this module from their own folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightnets.files import atomic_path


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of a benchmark, its module docstring as the description."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
