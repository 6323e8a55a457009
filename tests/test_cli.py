import csv
import io
import json

from lightnets.cli import main


def test_list(cli):
    code, out, _ = cli("list", "shufflenet*")
    assert code == 0 and "shufflenet_v1_g8_025" in out and "mobilenet" not in out
    code, _, err = cli("list", "nothing*")
    assert code == 2 and "no model matches 'nothing*'" in err


def test_profile_json_has_integer_totals(cli):
    code, out, _ = cli("profile", "mobilenet_v1", "--width", "0.5", "--resolution", "160", "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert (data["params"], data["madds"]) == (1_320_648, 76_524_800)
    assert data["input_size"] == [3, 160, 160]
    assert {row["kind"] for row in data["by_kind"]} >= {"pointwise", "depthwise", "conv", "fully connected"}


def test_profile_by_layer_csv(cli):
    code, out, _ = cli(
        "profile", "shufflenet_v1", "--groups", "8", "--scale", "0.5", "--by-layer", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(out.split("\n\n")[0])))
    assert code == 0
    assert rows[0]["kind"] == "conv" and rows[0]["output"] == "16x112x112"
    assert any(row["kind"] == "group conv" for row in rows)
    assert sum(int(row["madds"]) for row in rows) == 40_469_760


def test_profile_memory_table(cli):
    code, out, _ = cli("profile", "mobilenet_v2", "--memory", "--format", "markdown")
    assert code == 0
    assert "block execution" in out and "| 112x112 |" in out


def test_profile_json_with_memory(cli):
    _, out, _ = cli("profile", "squeezenet1_1", "--memory", "--format", "json", "--by-layer")
    data = json.loads(out)
    assert data["memory"]["block"]["peak_bytes"] <= data["memory"]["layer"]["peak_bytes"]
    assert len(data["layers"]) > 26


def test_profile_errors_name_the_problem(cli):
    code, _, err = cli("profile", "shufflenet_v1", "--scale", "3")
    assert code == 2 and "scale must be in (0, 2]" in err
    code, _, err = cli(
        "profile", "shufflenet_v1", "--groups", "5"
    )  # the table's group counts are the choices
    assert code == 2 and "invalid choice: 5 (choose from 1, 2, 3, 4, 8)" in err
    code, _, err = cli("profile", "mobilenet_v1", "--resolution", "16")
    assert code == 2 and "16x16 is too small" in err
    code, _, err = cli("profile", "mobilenet_v1", "--groups", "3")
    assert code == 2 and "mobilenet_v1 does not take --groups; its options are --width" in err
    code, _, err = cli("profile", "mobilenet_v9")
    assert code == 2 and "unknown model 'mobilenet_v9'" in err


def test_compare_prints_paper_and_measured_and_plots(cli, tmp_path):
    png = tmp_path / "accuracy.png"
    code, out, _ = cli("compare", "mobilenet_v1_050", "shufflenet_v1", "--plot", str(png))
    assert code == 0
    assert "1.0 MobileNet-224" in out and "ShuffleNet 2x (g = 3)" in out and "VGG" not in out
    assert "568.74" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_compare_json(cli):
    _, out, _ = cli("compare", "squeezenet1_0", "--format", "json")
    rows = json.loads(out)
    assert {row["model"] for row in rows} == {
        "SqueezeNet 1.0",
        "SqueezeNet (MobileNet paper)",
        "SqueezeNet 1.0, simple bypass",
        "SqueezeNet 1.0, complex bypass",
    }


def test_report_writes_markdown_and_plot(cli, tmp_path):
    code, out, _ = cli("report", "--out", str(tmp_path))
    assert code == 0
    assert "Table 2" in out and "Table 3" in out
    assert (tmp_path / "paper_tables.md").read_text().startswith("## Multiply-adds and parameters")
    assert (tmp_path / "accuracy_vs_madds.png").stat().st_size > 10_000


def test_export_then_predict_and_eval_on_onnxruntime(capsys, tmp_path, imagenet_sample, weights_root):
    onnx_file = tmp_path / "squeezenet.onnx"
    assert main(["export", "--weights", "squeezenet1_1.gluon_npy", "-o", str(onnx_file)]) == 0
    goldfish = str(imagenet_sample / "images" / "n01443537_goldfish.JPEG")
    capsys.readouterr()
    assert main(["predict", goldfish, "--weights", str(onnx_file), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["names"][0] == "goldfish"
    argv = ["eval", "--data", str(imagenet_sample), "--weights", str(onnx_file), "--limit", "20"]
    assert main([*argv, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 20
    assert main([*argv, "--backend", "pytorch"]) == 2
    assert "is run by onnxruntime: use --backend onnxruntime" in capsys.readouterr().err
