"""The command line: tables, JSON, exit codes and messages, training on fake data.

Training runs on `fake_pickled` (tests/conftest.py): 30 train and 20 test images
in torchvision's pickled layout, so batch 8 makes 4 steps per epoch.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from surgery import cli
from surgery.cli import main
from surgery.data import CIFAR10_CLASSES
from surgery.model import build_model
from surgery.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]

# The padded LeNet: (block number, Block, Layer, Output Shape), PyTorch's own shapes.
PADDED_LENET_ROWS = [
    (1, "pad 2", "pad1", "3x36x36"),
    (2, "conv 6 k5", "conv1", "6x32x32"),
    (3, "relu", "relu1", "6x32x32"),
    (4, "pool max 2", "pool1", "6x16x16"),
    (5, "conv 16 k5", "conv2", "16x12x12"),
    (6, "relu", "relu2", "16x12x12"),
    (7, "pool max 2", "pool2", "16x6x6"),
    (8, "fc 120", "fc1", "120"),
    (9, "relu", "relu3", "120"),
    (10, "fc 84", "fc2", "84"),
    (11, "relu", "relu4", "84"),
    (12, "fc 10", "fc3", "10"),
]

# conv 16 k20 meets a 6x14x14 input: it cannot run.
FAILING_SPEC = {
    "input": [3, 32, 32],
    "num_classes": 10,
    "blocks": [
        {"type": "conv", "out_channels": 6, "kernel_size": 5},
        {"type": "pool", "kind": "max", "kernel_size": 2},
        {"type": "conv", "out_channels": 16, "kernel_size": 20},
        {"type": "fc", "out_features": 10},
    ],
}
FAILING_MESSAGE = "block 3 (conv): input 6x14x14 is smaller than kernel_size 20"


def module_params(spec) -> list[int]:
    """Param # per user block, counted on the model PyTorch builds."""
    model = build_model(spec)
    return [
        sum(p.numel() for p in module.parameters())
        for name, module in model.named_children()
        if name != "flatten"
    ]


def write_spec(tmp_path: Path, data: object) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return str(path)


# ---------------------------------------------------------------- shapes


def test_shapes_table_padded_lenet(capsys):
    code = main(["shapes", "--preset", "padded-lenet"])

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == [
        "#",
        "Block",
        "Layer",
        "Output",
        "Shape",
        "Param",
        "#",
        "Mult-Adds",
    ]
    assert lines[2].split() == ["input", "3x32x32"]
    params = module_params(PRESETS["padded-lenet"].spec)
    for (index, label, name, shape), count in zip(PADDED_LENET_ROWS, params):
        pattern = rf"^{index}\s+{label}\s+{name}\s+{shape}\s+{count:,}\s+[\d,]+$"
        assert any(re.match(pattern, line) for line in lines), pattern
    assert re.search(r"^\s+flatten -> 576\s+flatten\s+576\s+0\s+0$", out, re.MULTILINE)
    assert out.rstrip().endswith("flatten: 576")


def test_shapes_table_puts_flatten_before_first_fc(capsys):
    main(["shapes", "--preset", "tutorial-lenet"])

    lines = capsys.readouterr().out.splitlines()
    flatten = next(i for i, line in enumerate(lines) if "flatten -> 400" in line)
    assert lines[flatten - 1].split()[:3] == ["6", "pool", "max"]
    assert lines[flatten + 1].split()[:3] == ["7", "fc", "120"]


def test_shapes_totals_line_sums_params(capsys):
    main(["shapes", "--preset", "padded-lenet"])

    lines = capsys.readouterr().out.splitlines()
    total = next(line for line in lines if line.split()[:1] == ["total"])
    assert total.split()[1] == f"{sum(module_params(PRESETS['padded-lenet'].spec)):,}"


def test_shapes_json_padded_lenet(capsys):
    code = main(["shapes", "--preset", "padded-lenet", "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["flatten"] == 576
    assert report["error"] is None
    assert [b["index"] for b in report["blocks"]] == list(range(1, 13))
    assert [b["output_shape"] for b in report["blocks"]][:7] == [
        [3, 36, 36],
        [6, 32, 32],
        [6, 32, 32],
        [6, 16, 16],
        [16, 12, 12],
        [16, 12, 12],
        [16, 6, 6],
    ]
    assert [b["params"] for b in report["blocks"]] == module_params(
        PRESETS["padded-lenet"].spec
    )
    assert set(report["blocks"][0]) == {
        "index",
        "type",
        "output_shape",
        "params",
        "mult_adds",
    }


def test_shapes_json_conv_mult_adds(capsys):
    main(["shapes", "--preset", "tutorial-lenet", "--json"])

    conv1 = json.loads(capsys.readouterr().out)["blocks"][0]
    # Per image: 6x28x28 outputs, each 3*5*5 multiply-adds, plus the bias adds.
    assert conv1["mult_adds"] == 6 * 28 * 28 * (3 * 5 * 5 + 1)


@pytest.mark.parametrize("name", list(PRESETS), ids=list(PRESETS))
def test_shapes_every_preset_passes(name, capsys):
    assert main(["shapes", "--preset", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["error"] is None


def test_shapes_failing_block_table(tmp_path, capsys):
    code = main(["shapes", write_spec(tmp_path, FAILING_SPEC)])

    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 2
    assert FAILING_MESSAGE in captured.err
    assert FAILING_MESSAGE not in captured.out
    assert lines[3].split() == [
        "1",
        "conv",
        "6",
        "k5",
        "conv1",
        "6x28x28",
        "456",
        "357,504",
    ]
    assert lines[4].split()[:5] == ["2", "pool", "max", "2", "pool1"]
    assert lines[5].split() == ["3", "conv", "16", "k20", "fails"]
    assert captured.out.rstrip().endswith("flatten: not reached")


def test_shapes_failing_block_json(tmp_path, capsys):
    code = main(["shapes", write_spec(tmp_path, FAILING_SPEC), "--json"])

    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 2
    assert [b["index"] for b in report["blocks"]] == [1, 2]
    assert report["blocks"][1]["output_shape"] == [6, 14, 14]
    assert report["flatten"] is None
    assert report["error"]["index"] == 3
    assert report["error"]["message"].startswith(FAILING_MESSAGE)
    assert FAILING_MESSAGE in captured.err


def test_shapes_reads_standard_input(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Text(PRESETS["tutorial-lenet"].spec.to_json()))

    assert main(["shapes", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["flatten"] == 400


class _Text:
    def __init__(self, text: str):
        self.text = text

    def read(self) -> str:
        return self.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"spec file .*missing\.json cannot be read: no such file"),
        (
            '{"blocks": [',
            (
                r"spec file .*missing\.json: the text is not valid JSON "
                r"\(Expecting value at line 1, column 13\)"
            ),
        ),
        (
            '{"blocks": [{"type": "conv", "kernel_size": 0}]}',
            r"spec file .*: block 1 \(conv\): kernel_size 0 is out of range",
        ),
        ("[1, 2]", r"spec file .*: the file is not a JSON object"),
        (b"\xff\xfe{", r"spec file .* cannot be read: it is not UTF-8 text"),
    ],
    ids=["missing-file", "bad-json", "bad-field", "not-an-object", "not-utf8"],
)
def test_shapes_unreadable_spec_file(tmp_path, capsys, content, message):
    path = tmp_path / "missing.json"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)

    code = main(["shapes", str(path)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert re.match(rf"error: {message}", captured.err)
    assert "Traceback" not in captured.err


def test_shapes_folder_as_spec(tmp_path, capsys):
    assert main(["shapes", str(tmp_path)]) == 2
    assert "it is a folder; give the path of a .json file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["shapes"], "one of the arguments SPEC.json --preset is required"),
        (["shapes", "x.json", "--preset", "lenet5"], "not allowed with argument"),
        (["shapes", "--preset", "vgg"], "invalid choice: 'vgg'"),
        ([], "the following arguments are required: COMMAND"),
    ],
    ids=["no-spec", "spec-and-preset", "unknown-preset", "no-command"],
)
def test_bad_arguments_exit_2(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["shapes", "--help"]) == 0
    assert "Mult-Adds" in capsys.readouterr().out


def test_shapes_as_subprocess():
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "surgery",
            "shapes",
            "--preset",
            "padded-lenet",
            "--json",
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["flatten"] == 576
    assert report["blocks"][6]["output_shape"] == [16, 6, 6]


# ---------------------------------------------------------------- presets


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0

    out = capsys.readouterr().out
    for preset in PRESETS.values():
        assert re.search(
            rf"^{preset.name}\s+{re.escape(preset.title)}$", out, re.MULTILINE
        )


def test_presets_json_round_trips_specs(capsys):
    main(["presets", "--json"])

    items = json.loads(capsys.readouterr().out)
    assert [item["name"] for item in items] == list(PRESETS)
    assert items[1]["spec"] == PRESETS["padded-lenet"].spec.to_dict()


# ---------------------------------------------------------------- train

TRAIN = ["train", "--preset", "tutorial-lenet", "--epochs", "1", "--batch-size", "8"]
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+)  step (\d+)  train_loss \d+\.\d{4}  train_acc \d+\.\d\d%  "
    r"test_acc \d+\.\d\d%  \d+ img/s  \d+\.\ds$"
)


def test_train_json_on_fake_data(fake_pickled, capsys):
    code = main([*TRAIN, "--data", str(fake_pickled.root), "--json"])

    lines = capsys.readouterr().out.splitlines()
    result = json.loads(lines[-1])
    assert code == 0
    assert [EPOCH_LINE.match(line).groups() for line in lines[:-1]] == [("1", "1", "4")]
    assert result["status"] == "done"
    assert result["steps"] == 4
    assert 0 <= result["test_accuracy"] <= 100
    assert list(result["per_class"]) == list(CIFAR10_CLASSES)
    assert result["seconds"] > 0
    assert result["images_per_second"] > 0
    assert result["device"] == "cpu"
    assert result["spec"] == PRESETS["tutorial-lenet"].spec.to_dict()
    assert result["config"]["batch_size"] == 8
    assert result["config"]["optimizer"] == "sgd"
    assert f"test_acc {result['epochs'][0]['test_accuracy']:.2f}%" in lines[0]
    assert f"train_loss {result['epochs'][0]['train_loss']:.4f}" in lines[0]


def test_train_one_line_per_epoch_and_summary(fake_pickled, capsys):
    code = main([*TRAIN[:4], "2", *TRAIN[5:], "--data", str(fake_pickled.root)])

    out = capsys.readouterr().out
    epochs = [m.groups() for m in map(EPOCH_LINE.match, out.splitlines()) if m]
    assert code == 0
    assert epochs == [("1", "2", "4"), ("2", "2", "8")]
    assert "done: trained 2 epochs" in out
    assert re.search(r"^test accuracy \d+\.\d\d%$", out, re.MULTILINE)
    assert re.search(r"^  airplane\s+\d+\.\d\d%$", out, re.MULTILINE)
    assert re.search(
        r"^seconds [\d.]+  images/s \d+  steps 8  device cpu$", out, re.MULTILINE
    )


def test_train_same_seed_same_result(fake_pickled, capsys):
    results = []
    for _ in range(2):
        main([*TRAIN, "--data", str(fake_pickled.root), "--json", "--seed", "3"])
        results.append(json.loads(capsys.readouterr().out.splitlines()[-1]))

    assert results[0]["losses"] == results[1]["losses"]
    assert results[0]["confusion"] == results[1]["confusion"]


def test_train_ctrl_c_stops_and_reports(fake_pickled, capsys, monkeypatch):
    real_train = cli.train

    def train_then_interrupt(spec, config, data, on_event, should_stop):
        def on_event_and_interrupt(event):
            on_event(event)
            if event.__class__.__name__ == "StepDone" and event.step == 2:
                signal.raise_signal(signal.SIGINT)

        return real_train(spec, config, data, on_event_and_interrupt, should_stop)

    monkeypatch.setattr(cli, "train", train_then_interrupt)
    handler = signal.getsignal(signal.SIGINT)

    code = main([*TRAIN, "--data", str(fake_pickled.root), "--json"])

    captured = capsys.readouterr()
    result = json.loads(captured.out.splitlines()[-1])
    assert code == 130
    assert result["status"] == "stopped"
    assert result["steps"] == 2
    assert "stopping after this batch" in captured.err
    assert signal.getsignal(signal.SIGINT) is handler


def test_train_missing_data(tmp_path, capsys):
    code = main([*TRAIN, "--data", str(tmp_path / "empty"), "--no-download"])

    captured = capsys.readouterr()
    assert code == 2
    assert "error: CIFAR-10 was not found under" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--lr", "50"], r"lr 50\.0 is out of range; use a number from 1e-07 to 10"),
        (["--epochs", "0"], r"epochs 0 is out of range; use a whole number from 1"),
        (["--momentum", "2"], r"momentum 2\.0 is out of range"),
        (["--device", "tpu9"], r"device 'tpu9' is not a device name"),
    ],
    ids=["lr", "epochs", "momentum", "device"],
)
def test_train_bad_settings(tmp_path, capsys, option, message):
    code = main([*TRAIN, "--data", str(tmp_path), "--no-download", *option])

    captured = capsys.readouterr()
    assert code == 2
    assert re.search(rf"^error: {message}", captured.err, re.MULTILINE)
    assert "loading CIFAR-10" not in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_train_unavailable_device(tmp_path, capsys):
    code = main([*TRAIN, "--data", str(tmp_path), "--no-download", "--device", "cuda"])

    assert code == 2
    assert "device 'cuda' is not available on this machine" in capsys.readouterr().err


def test_train_invalid_spec_before_data(tmp_path, capsys):
    spec = write_spec(tmp_path, FAILING_SPEC)

    code = main(["train", spec, "--data", str(tmp_path / "none"), "--no-download"])

    captured = capsys.readouterr()
    assert code == 2
    assert f"error: {FAILING_MESSAGE}" in captured.err
    assert "loading CIFAR-10" not in captured.err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"input": [1, 28, 28]},
            "spec input 1x28x28 does not match CIFAR-10's 3x32x32",
        ),
        (
            {"num_classes": 5},
            "spec num_classes 5 does not match CIFAR-10's 10 classes",
        ),
    ],
    ids=["input", "num_classes"],
)
def test_train_spec_must_fit_cifar10(tmp_path, capsys, change, message):
    spec = PRESETS["tutorial-lenet"].spec.to_dict() | change
    spec["blocks"][-1]["out_features"] = spec["num_classes"]

    code = main(["train", write_spec(tmp_path, spec), "--data", str(tmp_path)])

    captured = capsys.readouterr()
    assert code == 2
    assert f"error: {message}" in captured.err
    assert "loading CIFAR-10" not in captured.err


def test_train_optimizer_choices(capsys):
    assert main([*TRAIN, "--optimizer", "rmsprop"]) == 2
    assert "invalid choice: 'rmsprop'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--batch-sizes", "4,,8"), ("--lrs", "0.001,"), ("--seeds", ",1")],
    ids=["double-comma", "trailing-comma", "leading-comma"],
)
def test_sweep_list_with_an_empty_item_is_refused(tmp_path, capsys, option, value):
    args = ["sweep", "--estimate-only", "--db", str(tmp_path / "runs.sqlite")]

    code = main([*args, f"{option}={value}"])

    assert code == 2
    assert re.search(
        rf"argument {option}: '{re.escape(value)}' has an empty item between "
        "commas; write a list such as 4,8,16",
        capsys.readouterr().err,
    )


@pytest.mark.parametrize("path", ["", "  "], ids=["empty", "blank"])
def test_shapes_empty_spec_path_is_named(capsys, path):
    code = main(["shapes", path])

    assert code == 2
    assert re.match(
        rf"error: spec file '{path}' is an empty path; give the path of a \.json file",
        capsys.readouterr().err,
    )


def test_train_refuses_an_oversized_model_before_data(tmp_path, capsys):
    blocks = [{"type": "conv", "out_channels": 1024, "kernel_size": 3}]
    blocks += [{"type": "fc", "out_features": 65536}, {"type": "fc"}]
    spec = write_spec(tmp_path, {"input": [3, 32, 32], "blocks": blocks})

    code = main(["train", spec, "--data", str(tmp_path / "none"), "--no-download"])

    captured = capsys.readouterr()
    assert code == 2
    assert "parameters, more than 50,000,000; lower out_channels" in captured.err
    assert "loading CIFAR-10" not in captured.err
