"""SqueezeNet 1.0: the authors' Deep Compression file re-encoded in the lightnets container.

The authors' ``compressed_SqueezeNet.net`` (660 KB) stores 8-bit codebook indices and
4-bit gaps at fixed widths. Re-encoding the very same weights (codebooks and codes as
decoded) with Huffman-coded indices and gaps and the best gap width per layer gives a
smaller file that decodes to bit-identical weights, hence equal accuracy; the 6-bit row
re-shares each layer's decoded weights with a 6-bit k-means codebook (no recovery), as
the paper's 0.47 MB model did. Every file is evaluated on the 500-image sample.

    python benchmarks/compress_squeezenet1_0.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from _output import benchmark_parser  # noqa: E402
from _paths import IMAGENET_SAMPLE, RESULTS
from train_common import machine_header, use_shared_weights

import lightnets
from lightnets.classify import evaluate
from lightnets.compress.pipeline import encode_model
from lightnets.compress.sharing import SharedLayer, share_layer
from lightnets.files import write_text
from lightnets.weights.container import _codes_of
from lightnets.weights.load import metadata_json
from lightnets.weights.store import resolve

TAG = "squeezenet1_0.deep_compression"


def decoded_codebooks(model: torch.nn.Module) -> dict[str, SharedLayer]:
    """Each convolution's codebook (as the authors' file stores it) and codes."""
    from lightnets.weights.importers.deep_compression import decode_net

    path = resolve(lightnets.weights.get_weights(TAG), None, False)[0]
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    layers = decode_net(Path(path).read_bytes(), [tuple(m.weight.shape) for _, m in convs])
    shared = {}
    for (name, module), layer in zip(convs, layers, strict=True):
        flat = module.weight.detach().numpy().reshape(-1)
        codes = _codes_of(flat, layer.codebook, name).reshape(module.weight.shape)
        shared[name] = SharedLayer(8, layer.codebook.astype(np.float32), codes)
    return shared, Path(path).stat().st_size


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--out", default=str(RESULTS / "compress"), help="where the report goes")
    parser.add_argument("--files", default="/tmp/lightnets-compress", help="where the .lnz files go")
    parser.add_argument("--no-eval", action="store_true")
    args = parser.parse_args()
    use_shared_weights()
    out = Path(args.out)
    model = lightnets.create_model("squeezenet1_0", weights=TAG).eval()
    metadata = json.loads(metadata_json(model, model.model_name, model.model_kwargs))
    metadata["converted_from"] = TAG
    shared, authors_bytes = decoded_codebooks(model)
    rows = []
    if not args.no_eval:
        base = evaluate(model, IMAGENET_SAMPLE, progress=False)
        rows.append(
            (f"{TAG} (authors' .net, 8-bit indices, 4-bit gaps)", authors_bytes, base.top1, base.top5, "-")
        )
    from lightnets.weights.container import write_container

    files = Path(args.files)
    lossless = files / "squeezenet1_0_lossless.lnz"
    write_container(lossless, encode_model(model, shared, use_huffman=True), metadata)
    reloaded = lightnets.create_model("squeezenet1_0", weights=lossless)
    same = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True)
    )
    # Bit-identical weights give the authors' file's outputs: no need to evaluate them twice.
    result = None if args.no_eval else (base if same else evaluate(reloaded, IMAGENET_SAMPLE, progress=False))
    rows.append(
        (
            "lightnets .lnz, same codebooks and codes, Huffman",
            lossless.stat().st_size,
            result.top1 if result else float("nan"),
            result.top5 if result else float("nan"),
            "yes" if same else "NO",
        )
    )
    six = {}
    for name in shared:
        module = model.get_submodule(name)
        six[name] = share_layer(module.weight.detach(), 6)
    requantised = lightnets.create_model("squeezenet1_0", weights=TAG).eval()
    with torch.no_grad():
        for name, layer in six.items():
            requantised.get_submodule(name).weight.copy_(torch.from_numpy(layer.weight()))
    six_path = files / "squeezenet1_0_6bit.lnz"
    write_container(six_path, encode_model(requantised, six, use_huffman=True), metadata)
    result6 = (
        None
        if args.no_eval
        else evaluate(
            lightnets.create_model("squeezenet1_0", weights=six_path), IMAGENET_SAMPLE, progress=False
        )
    )
    rows.append(
        (
            "lightnets .lnz, re-shared with 6-bit k-means (no recovery), Huffman",
            six_path.stat().st_size,
            result6.top1 if result6 else float("nan"),
            result6.top5 if result6 else float("nan"),
            "no (6-bit)",
        )
    )
    lines = [
        machine_header("SqueezeNet 1.0 from the authors' Deep Compression file, re-encoded"),
        "",
        "| file | bytes | KB | top-1 % (500-image sample) | top-5 % | bit-identical weights |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, size, top1, top5, same_flag in rows:
        lines.append(f"| {label} | {size:,} | {size / 1000:.1f} | {top1:.1f} | {top5:.1f} | {same_flag} |")
    write_text(out / "squeezenet1_0.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
