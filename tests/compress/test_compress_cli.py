"""``lightnets compress``: bad input refused with a message and no output; the file works everywhere."""

import json

import pytest

BASE = ("compress", "squeezenet1_1", "--weights", "squeezenet1_1.gluon_npy")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--prune", "1.0"), "1.0 is out of range"),
        (("--prune", "-0.1"), "-0.1 is out of range"),
        (("--share-bits", "17"), "17 is out of range"),
        (("--share-bits", "0"), "0 is out of range"),
        (("--qat-bits", "9"), "2..8 bits (int8 kernels hold at most 8), got 9"),
        (("--qat-bits", "1"), "got 1"),
        (("--qat-bits", "four"), "'four' is not a whole number of bits"),
        (("--qat-bits", "8", "--prune", "0.5"), "replaces pruning and weight sharing"),
        (("--qat-bits", "8", "--deep-compression", "x.net"), "its output is a .lnz file"),
    ],
)
def test_out_of_range_values_are_named(cli, tmp_path, options, message):
    out = tmp_path / "x.lnz"
    code, _, err = cli(*BASE, *options, "-o", str(out))
    assert code == 2 and message in err
    assert not out.exists()


def test_bad_files_and_folders_leave_no_output(cli, tmp_path, weights_root):
    out = tmp_path / "x.lnz"
    (tmp_path / "no_images").mkdir()
    code, _, err = cli(
        *BASE,
        "--prune",
        "0.5",
        "--recovery-data",
        str(tmp_path / "no_images"),
        "--recovery-steps",
        "2",
        "-o",
        str(out),
    )
    assert code == 2 and "no_images holds no images" in err
    bad = tmp_path / "s.csv"
    bad.write_text("features.0.conv,1.5\n")
    code, _, err = cli(*BASE, "--sparsities", str(bad), "-o", str(out))
    assert code == 2 and "s.csv" in err and "1.5" in err
    code, _, err = cli(*BASE, "--prune", "0.5", "-o", str(tmp_path / "x.bin"))
    assert code == 2 and "must end in .lnz" in err
    fake = tmp_path / "fake.lnz"
    fake.write_bytes(b"not a container at all")
    code, _, err = cli("eval", "--data", str(tmp_path), "--weights", str(fake))
    assert code == 2 and "fake.lnz" in err
    assert not out.exists() and list(tmp_path.glob(".*part*")) == []


def test_compress_then_predict_and_eval(cli, tmp_path, weights_root, imagenet_sample):
    out = tmp_path / "sq.lnz"
    net = tmp_path / "sq.net"
    code, text, err = cli(
        *BASE,
        "--prune",
        "0.5",
        "--share-bits",
        "5",
        "--huffman",
        "-o",
        str(out),
        "--deep-compression",
        str(net),
        "--quiet",
        "--format",
        "json",
    )
    assert code == 0, err
    summary = json.loads(text)
    assert summary["file_bytes"] == out.stat().st_size and summary["ratio"] > 8
    assert summary["totals"]["params"] == 1_235_496 and net.is_file()
    code, text, err = cli(
        "eval",
        "--data",
        str(imagenet_sample),
        "--weights",
        str(out),
        "--limit",
        "8",
        "--format",
        "json",
    )
    assert code == 0, err
    assert json.loads(text)["n"] == 8
    image = next((imagenet_sample / "images").iterdir())
    code, text, err = cli("predict", str(image), "--weights", str(out), "--format", "json")
    assert code == 0, err


def test_quantisation_aware_weights_are_read_by_eval(cli, tmp_path, weights_root, imagenet_sample):
    out = tmp_path / "q4.lnz"
    code, text, err = cli(
        *BASE, "--qat-bits", "4", "--huffman", "-o", str(out), "--quiet", "--format", "json"
    )
    assert code == 0, err
    summary = json.loads(text)
    encodings = {row["encoding"] for row in summary["layers"]}
    assert "grid" in encodings and summary["ratio"] > 6  # about 4 bits a weight, against 32
    code, text, err = cli(
        "eval", "--data", str(imagenet_sample), "--weights", str(out), "--limit", "20", "--format", "json"
    )
    assert code == 0, err
    assert json.loads(text)["n"] == 20
