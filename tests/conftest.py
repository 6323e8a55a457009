"""Shared fixtures: the real weights and data sets that sit beside the repository.

Tests and CI read the original weight files from ``../shared/weights`` (as a user
would through ``$LIGHTNETS_WEIGHTS``, which overrides it) and never download. Every
path to ``../shared`` is worked out here, once; tests ask for it through a fixture.
"""

import os
import shutil
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"  # beside the repository
WEIGHTS_ROOT = Path(os.environ.get("LIGHTNETS_WEIGHTS") or SHARED / "weights")
IMAGENET_SAMPLE = SHARED / "data" / "imagenet-sample"
IMAGENETTE = SHARED / "data" / "imagenette2-224-subset"
PENNFUDAN = SHARED / "data" / "pennfudan"


@pytest.fixture(autouse=True)
def offline_weights(monkeypatch, tmp_path):
    """Point lightnets at the shared weights and an empty cache of the test's own."""
    monkeypatch.setenv("LIGHTNETS_WEIGHTS", str(WEIGHTS_ROOT))
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


def shared_folder(path: Path, what: str) -> Path:
    """``path`` if it is there; otherwise the test is skipped, saying what is missing."""
    if not path.is_dir():
        pytest.skip(f"no {what} at {path}")
    return path


@pytest.fixture(scope="session")
def weights_root() -> Path:
    return shared_folder(WEIGHTS_ROOT, "weights")


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    """500 real ImageNet validation images (``images/``) with their labels."""
    return shared_folder(IMAGENET_SAMPLE, "ImageNet sample")


@pytest.fixture(scope="session")
def imagenette() -> Path:
    """The Imagenette subset (``train/`` and ``val/``, 10 class folders each)."""
    return shared_folder(IMAGENETTE, "Imagenette subset")


@pytest.fixture
def tiny_imagenette(imagenette, tmp_path):
    """``make(classes, train_per_class, val_per_class)``: a train/ + val/ copy of real images."""

    def make(classes: int = 2, train: int = 8, val: int = 2) -> Path:
        root = tmp_path / f"imagenette_{classes}_{train}_{val}"
        for split, count in (("train", train), ("val", val)):
            for folder in sorted((imagenette / split).iterdir())[:classes]:
                target = root / split / folder.name
                target.mkdir(parents=True, exist_ok=True)
                for image in sorted(folder.iterdir())[:count]:
                    shutil.copy(image, target / image.name)
        return root

    return make


@pytest.fixture(scope="session")
def pennfudan_folder() -> Path:
    """The Penn-Fudan pedestrians (141 photos with instance masks, ``PennFudanPed/``)."""
    return shared_folder(PENNFUDAN, "Penn-Fudan copy")


@pytest.fixture(scope="session")
def coco128_folder() -> Path:
    """The first 128 COCO train2017 photos with YOLO-format boxes (``coco128/``)."""
    return shared_folder(SHARED / "data" / "coco128", "coco128 copy")


@pytest.fixture
def one_thread():
    """One PyTorch thread for the test (fast and deterministic on a shared machine, and
    bit-reproducible against subprocesses run with --threads 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli(capsys):
    """``cli(*argv)``: the ``lightnets`` command run in this process, as
    ``(exit status, standard output, standard error)``; argparse's refusals included."""
    from lightnets.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse refuses an option value
            code = exit_.code if isinstance(exit_.code, int) else 2
        out, err = capsys.readouterr()
        return code, out, err

    return run
