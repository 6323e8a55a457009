"""Why SqueezeNet with a bypass did not train, and what the unit-scale pass changes.

    .venv/bin/python benchmarks/squeezenet_bypass_init.py [--images 48] [--side 96]

SqueezeNet 1.0 without a bypass and with the simple and the complex one, initialised as
the trainer initialises a network without normalisation (``norm_free_init``: He's
initialisation, the class-score layer's bias at +1), once with He's alone and once with
the unit-scale pass that networks with residual sums now get (``unit_scale``). For
``--images`` training images of the Imagenette subset (every n-th file, centre crop at
``--side``), the RMS of each Fire module's output and the spread (standard deviation)
of the class scores. Writes ``results/squeezenet_bypass_init.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, write_markdown  # noqa: E402
from _paths import IMAGENETTE, RESULTS  # noqa: E402
from train_common import machine_header  # noqa: E402

from lightnets import create_model  # noqa: E402
from lightnets.data.images import load_image  # noqa: E402
from lightnets.data.transforms import EvalTransform  # noqa: E402
from lightnets.layers import Fire  # noqa: E402
from lightnets.train import init  # noqa: E402


def fire_scales(bypass: str | None, rescale: bool, images: torch.Tensor) -> tuple[list[float], float]:
    """The RMS of every Fire output and the class scores' spread at initialisation."""
    torch.manual_seed(0)
    model = create_model("squeezenet1_0", bypass=bypass, num_classes=10)
    unit_scale = init.unit_scale
    if not rescale:  # He's initialisation alone, as before the pass existed
        init.unit_scale = lambda *args, **kwargs: None
    try:
        init.norm_free_init(model)
    finally:
        init.unit_scale = unit_scale
    rms: list[float] = []
    for fire in (m for m in model.modules() if isinstance(m, Fire)):
        fire.register_forward_hook(lambda _m, _i, out: rms.append(out.pow(2).mean().sqrt().item()))
    with torch.no_grad():
        scores = model.eval()(images)
    return rms, scores.std().item()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--side", type=int, default=96)
    args = parser.parse_args()
    files = sorted((IMAGENETTE / "train").glob("*/*.JPEG"))
    chosen = files[:: max(1, len(files) // args.images)][: args.images]
    transform = EvalTransform(size=args.side, resize=round(args.side / 0.875))
    images = torch.stack([transform(load_image(f)) for f in chosen])
    lines = [
        machine_header("SqueezeNet 1.0 at initialisation: the bypasses' scale").rstrip("\n"),
        "",
        f"{len(chosen)} images of {IMAGENETTE.name}/train at {args.side} px. RMS of each Fire module's output "
        "(fire2 .. fire9) and the standard deviation of the 10 class scores; He = He's initialisation "
        "alone, He + unit scale = the trainer's initialisation of a network with residual sums.",
        "",
        "| bypass | initialisation | Fire outputs' RMS (fire2 .. fire9) | class scores' sd |",
        "|---|---|---|---:|",
    ]
    for bypass in (None, "simple", "complex"):
        for rescale in (False, True):
            rms, spread = fire_scales(bypass, rescale, images)
            lines.append(
                f"| {bypass or 'none'} | {'He + unit scale' if rescale else 'He'} "
                f"| {' / '.join(f'{v:.2f}' for v in rms)} | {spread:.2f} |"
            )
    write_markdown(lines, RESULTS / "squeezenet_bypass_init.md")


if __name__ == "__main__":
    main()
