"""The builder page driven through Streamlit's AppTest: edits, table, undo, fixes,
quiz, share links and uploads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from surgery.explain import explain_block
from surgery.presets import PRESETS, TUTORIAL_LENET, get_preset
from surgery.shapes import trace
from surgery.share import MAX_UPLOAD_BYTES, decode_spec, encode_spec
from surgery.spec import FC, Conv, Pool, PoolKind, Spec, describe
from ui.builder import receptive_field_text
from ui.builder_table import NUMBER_HEADER

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TIMEOUT = 30


# ---------------------------------------------------------------- helpers


def start(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def load(at: AppTest, preset: str) -> AppTest:
    at.selectbox(key="preset_choice").select(preset).run()
    return click(at, "load_preset")


def spec(at: AppTest) -> Spec:
    return at.session_state["spec"]


def ids(at: AppTest) -> tuple[int, ...]:
    return at.session_state["block_ids"]


def labels(at: AppTest) -> list[str]:
    """The Block column of the shape table, without input, flatten and total."""
    table = at.table[0].value
    rows = table[table[NUMBER_HEADER] != ""]
    return list(rows["Block"])


def table_row(at: AppTest, block: str) -> dict:
    table = at.table[0].value
    return table[table["Block"] == block].iloc[0].to_dict()


def set_field(at: AppTest, position: int, name: str, value) -> AppTest:
    key = f"b{ids(at)[position - 1]}_{name}"
    at.number_input(key=key).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def messages(elements) -> list[str]:
    return [e.value for e in elements]


@pytest.fixture
def app() -> AppTest:
    return start()


@pytest.fixture
def padded(app: AppTest) -> AppTest:
    return load(app, "padded-lenet")


# ---------------------------------------------------------------- page and table


def test_page_starts_with_the_tutorial_lenet(app: AppTest):
    assert app.title[0].value == "ConvNet surgery — Builder"
    assert spec(app) == TUTORIAL_LENET
    assert table_row(app, "flatten (automatic)")["Output Shape"] == "400"
    assert table_row(app, "Total")["Param #"] == "62,006"
    assert "Valid stack" in app.success[0].value


def test_padded_lenet_shows_36_and_flatten_576(padded: AppTest):
    assert spec(padded) == get_preset("padded-lenet")
    table = padded.table[0].value
    assert list(table["Output Shape"][:3]) == ["3x32x32", "3x36x36", "6x32x32"]
    assert table_row(padded, "flatten (automatic)")["Input Shape"] == "16x6x6"
    assert table_row(padded, "flatten (automatic)")["Output Shape"] == "576"
    assert table_row(padded, "fc 120")["Param #"] == "69,240"
    notes = messages(padded.info)
    assert any("16 x 6 x 6 = 576" in note for note in notes), notes


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_loads_with_its_flatten(app: AppTest, name: str):
    load(app, name)
    expected = trace(get_preset(name))
    assert spec(app) == get_preset(name)
    assert table_row(app, "flatten (automatic)")["Output Shape"] == str(
        expected.flatten
    )
    assert table_row(app, "Total")["Param #"] == f"{expected.total_params:,}"


def test_every_block_shows_its_output_shape_in_the_editor(padded: AppTest):
    texts = " ".join(messages(padded.markdown))
    assert "3x32x32 → **Output Shape 3x36x36**" in texts
    assert "16x12x12 → **Output Shape 16x6x6**" in texts


# ---------------------------------------------------------------- stack edits


def _insert(at: AppTest, position: int, type_name: str, offset: int) -> AppTest:
    block_id = ids(at)[position - 1]
    at.selectbox(key=f"b{block_id}_new_type").select(type_name).run()
    return click(at, f"ins{offset}_{block_id}")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda at: _insert(at, 4, "batchnorm", 0),
            ["conv 6 k5", "relu", "pool max 2", "batchnorm", "conv 16 k5"],
        ),
        (
            lambda at: _insert(at, 1, "pool", 1),
            ["conv 6 k5", "pool max 2", "relu", "pool max 2", "conv 16 k5"],
        ),
        (
            lambda at: click(at, f"dup_{ids(at)[0]}"),
            ["conv 6 k5", "conv 6 k5", "relu", "pool max 2", "conv 16 k5"],
        ),
        (
            lambda at: click(at, f"up_{ids(at)[2]}"),
            ["conv 6 k5", "pool max 2", "relu", "conv 16 k5", "relu"],
        ),
        (
            lambda at: click(at, f"down_{ids(at)[0]}"),
            ["relu", "conv 6 k5", "pool max 2", "conv 16 k5", "relu"],
        ),
        (
            lambda at: click(at, f"del_{ids(at)[1]}"),
            ["conv 6 k5", "pool max 2", "conv 16 k5", "relu", "pool max 2"],
        ),
    ],
    ids=["insert-above", "insert-below", "duplicate", "move-up", "move-down", "delete"],
)
def test_stack_edit_changes_spec_and_table(app: AppTest, edit, expected):
    edit(app)
    blocks = spec(app).blocks
    assert [describe(block) for block in blocks[:5]] == expected
    assert labels(app)[:5] == expected
    assert len(ids(app)) == len(blocks) == len(set(ids(app)))


def test_insert_closes_its_popover(app: AppTest):
    # Left open, the popover covers the shape table through later edits.
    conv1 = ids(app)[0]
    app.session_state[f"ins_{conv1}"] = True
    _insert(app, 1, "pad", 0)
    assert spec(app).blocks[0].type == "pad"
    assert app.session_state[f"ins_{conv1}"] is False


def test_widgets_follow_a_moved_block(app: AppTest):
    conv2 = ids(app)[3]
    set_field(app, 4, "out_channels", 20)
    click(app, f"up_{conv2}")
    click(app, f"up_{conv2}")
    assert ids(app)[1] == conv2
    assert spec(app).blocks[1] == Conv(20, 5)
    assert app.number_input(key=f"b{conv2}_out_channels").value == 20
    assert app.number_input(key=f"b{ids(app)[0]}_out_channels").value == 6


def test_append_block_at_the_end(app: AppTest):
    app.selectbox(key="append_type").select("dropout").run()
    click(app, "append_block")
    assert spec(app).blocks[-1].type == "dropout"
    assert "last block must be an fc" in app.error[0].value


def test_num_classes_also_sets_the_last_fc(app: AppTest):
    app.number_input(key="num_classes").set_value(100).run()
    assert spec(app).num_classes == 100
    assert spec(app).blocks[-1] == FC(100)
    assert table_row(app, "fc 100")["Output Shape"] == "100"


def test_stack_too_large_to_train_is_flagged(app: AppTest):
    # 16 x 125 x 125 = 250,000 features into fc1's 120: 30 million params;
    # fc1 with 512 out_features has 250,000 x 512 + 512 = 128,000,512, and
    # with conv1 456, conv2 2,416, fc2 43,092 and fc3 850: 128,047,326.
    app.number_input(key="in_height").set_value(512).run()
    app.number_input(key="in_width").set_value(512).run()
    assert not app.warning
    set_field(app, 7, "out_features", 512)

    assert trace(spec(app)).total_params == 128_047_326
    assert "Valid stack" in app.success[0].value
    assert app.warning[0].value.startswith(
        "128,047,326 params is more than the 50,000,000 that Train accepts"
    )


def test_input_shape_edit_flows_through(app: AppTest):
    app.number_input(key="in_height").set_value(28).run()
    app.number_input(key="in_width").set_value(28).run()
    assert spec(app).input == (3, 28, 28)
    assert table_row(app, "flatten (automatic)")["Output Shape"] == "256"


def test_pool_stride_same_as_kernel_toggle(app: AppTest):
    pool = ids(app)[2]
    app.checkbox(key=f"b{pool}_stride_same").uncheck().run()
    app.number_input(key=f"b{pool}_stride").set_value(1).run()
    assert spec(app).blocks[2] == Pool(PoolKind.MAX, 2, stride=1)
    assert table_row(app, "pool max 2 s1")["Output Shape"] == "6x27x27"


# ---------------------------------------------------------------- invalid edits


def test_invalid_edit_keeps_every_block_and_marks_it(padded: AppTest):
    before = spec(padded)
    set_field(padded, 5, "kernel_size", 30)
    after = spec(padded)
    assert len(after.blocks) == len(before.blocks) == 12
    assert after.blocks[4] == Conv(16, 30)
    assert after.blocks[5:] == before.blocks[5:]
    errors = messages(padded.error)
    at_block = "block 5 (conv): input 6x16x16 is smaller than kernel_size 30"
    assert any(e.startswith(at_block) for e in errors), errors
    row = padded.table[0].value.iloc[5]
    assert (row[NUMBER_HEADER], row["Output Shape"]) == ("5", "✗ does not run")
    assert list(padded.table[0].value["Output Shape"][:5]) == [
        "3x32x32", "3x36x36", "6x32x32", "6x32x32", "6x16x16"
    ]  # fmt: skip
    assert not padded.button(key="undo_banner").disabled


def test_extra_pools_fail_at_the_pool_that_no_longer_fits(app: AppTest):
    pool2 = ids(app)[5]
    for _ in range(3):
        click(app, f"dup_{pool2}")
    assert len(spec(app).blocks) == 14
    errors = messages(app.error)
    assert any(e.startswith("block 9 (pool): input 16x1x1") for e in errors), errors
    assert labels(app)[5:9] == ["pool max 2"] * 4


def test_undo_restores_the_last_valid_stack_and_redo_reapplies(padded: AppTest):
    valid = spec(padded)
    set_field(padded, 5, "kernel_size", 30)
    broken = spec(padded)
    click(padded, "undo_banner")
    assert spec(padded) == valid
    assert padded.number_input(key=f"b{ids(padded)[4]}_kernel_size").value == 5
    assert not padded.error
    click(padded, "redo")
    assert spec(padded) == broken


def test_preset_load_is_one_undo_step(padded: AppTest):
    click(padded, "undo")
    assert spec(padded) == TUTORIAL_LENET
    assert padded.button(key="undo").disabled


def test_back_to_last_valid_after_two_invalid_edits(padded: AppTest):
    valid = spec(padded)
    set_field(padded, 5, "kernel_size", 30)
    set_field(padded, 5, "out_channels", 32)
    click(padded, "back_to_valid")
    assert spec(padded) == valid


@pytest.mark.parametrize("fix", [0, 1], ids=["first-fix", "second-fix"])
def test_fix_button_makes_the_stack_valid(padded: AppTest, fix: int):
    set_field(padded, 5, "kernel_size", 30)
    label = padded.button(key=f"fix_{fix}").label
    click(padded, f"fix_{fix}")
    assert not padded.error
    assert "Valid stack" in padded.success[0].value
    assert len(spec(padded).blocks) >= 11, label
    click(padded, "undo")
    assert spec(padded).blocks[4] == Conv(16, 30)


def test_pool_after_fc_is_marked_and_fixed(app: AppTest):
    click(app, f"down_{ids(app)[5]}")
    assert [describe(b) for b in spec(app).blocks[5:7]] == ["fc 120", "pool max 2"]
    errors = messages(app.error)
    assert any(e.startswith("block 7 (pool): comes after the fc") for e in errors)
    click(app, "fix_0")
    assert not app.error
    assert len(spec(app).blocks) == 11


def test_a_new_edit_clears_redo(padded: AppTest):
    set_field(padded, 5, "kernel_size", 30)
    click(padded, "undo")
    assert not padded.button(key="redo").disabled
    set_field(padded, 5, "kernel_size", 3)
    assert padded.button(key="redo").disabled
    assert table_row(padded, "conv 16 k3")["Output Shape"] == "16x14x14"


def test_empty_stack_is_a_message_not_a_traceback(app: AppTest):
    for block_id in list(ids(app)):
        click(app, f"del_{block_id}")
    assert spec(app).blocks == ()
    assert "there are no blocks" in app.error[0].value


def test_block_explanation_shows_formula_and_params(app: AppTest):
    codes = messages(app.code)
    assert any("floor((32 + 2*0 - 1*(5-1) - 1) / 1) + 1 = 28" in c for c in codes)
    texts = " ".join(messages(app.markdown))
    assert "6 x (3 x 5 x 5) + 6 = 456" in texts


# ---------------------------------------------------------------- quiz


def _answer(at: AppTest, text: str) -> AppTest:
    at.text_input(key="quiz_answer_1").input(text)
    check = next(b for b in at.button if b.label == "Check")
    check.click().run()
    assert not at.exception
    return at


def test_quiz_hides_the_output_shape(app: AppTest):
    app.toggle(key="quiz_on").set_value(True).run()
    table = app.table[0].value
    assert list(table["Output Shape"]) == ["3x32x32", "?"]
    assert "400" not in " ".join(messages(app.success))
    shown = messages(app.markdown) + messages(app.code) + messages(app.info)
    assert not [text for text in shown if "28x28" in text or "400" in text]
    assert "? → **Output Shape ?**" in shown


def test_quiz_right_answer(app: AppTest):
    app.toggle(key="quiz_on").set_value(True).run()
    _answer(app, "6 x 28 x 28")
    assert "Correct: conv1 gives 6x28x28." in messages(app.success)
    assert list(app.table[0].value["Output Shape"]) == ["3x32x32", "6x28x28"]
    click(app, "quiz_next")
    assert app.selectbox(key="quiz_block").value == 2


def test_quiz_wrong_answer_shows_the_formula(app: AppTest):
    app.toggle(key="quiz_on").set_value(True).run()
    _answer(app, "6x32x32")
    assert any(e.startswith("Not quite") for e in messages(app.error))
    assert any("= 28" in c for c in messages(app.code))
    assert list(app.table[0].value["Output Shape"]) == ["3x32x32", "?"]


# ---------------------------------------------------------------- links and files


def test_query_carries_the_current_stack(padded: AppTest):
    set_field(padded, 5, "kernel_size", 30)
    assert decode_spec(padded.query_params["stack"]) == spec(padded)


def test_share_link_restores_the_stack_exactly():
    shared = get_preset("deep-cnn").replace_blocks(
        (Conv(8, 3, padding=1), Pool(PoolKind.AVG, 3, stride=2, ceil_mode=True), FC(10))
    )
    at = start({"stack": encode_spec(shared)})
    assert spec(at) == shared
    assert not at.warning


@pytest.mark.parametrize(
    "link",
    ["v1.garbage", "v9.abc", "v1." + "A" * 5000],
    ids=["damaged", "unknown-version", "oversized"],
)
def test_bad_share_link_warns_and_keeps_the_default(link: str):
    at = start({"stack": link})
    assert spec(at) == TUTORIAL_LENET
    assert at.warning[0].value.startswith("The share link could not be opened")
    # The damaged link stays in the address bar until the first edit.
    assert at.query_params["stack"] == link
    set_field(at, 1, "out_channels", 8)
    assert decode_spec(at.query_params["stack"]) == spec(at)


def _publish_a_huge_stack() -> None:
    import random

    import streamlit as st

    from surgery.shapes import ShapeReport
    from surgery.spec import FC, Conv, Spec
    from ui.builder_tools import publish_link

    st.query_params["stack"] = "v1.old"
    rng = random.Random(0)
    blocks = [Conv(rng.randint(1, 1024), rng.randint(1, 32)) for _ in range(800)]
    spec = Spec(blocks=(*blocks, FC(10)))
    st.write(f"link: {publish_link(ShapeReport(spec, (), None, None))}")


def test_stack_too_long_for_a_link_drops_the_query():
    at = AppTest.from_function(_publish_a_huge_stack, default_timeout=TIMEOUT).run()
    assert at.markdown[0].value == "link: None"
    assert "stack" not in at.query_params


def test_bad_upload_keeps_the_stack(padded: AppTest):
    before = spec(padded)
    bad = json.dumps({"input": [3, 32, 32], "blocks": [{"type": "conv", "k": 3}]})
    padded.file_uploader(key="upload").set_value(
        ("net.json", bad.encode(), "application/json")
    ).run()
    assert spec(padded) == before
    errors = messages(padded.error)
    assert any("net.json was not opened" in e and "is unknown" in e for e in errors)


def test_oversized_upload_keeps_the_stack(app: AppTest):
    big = b" " * (MAX_UPLOAD_BYTES + 1)
    app.file_uploader(key="upload").set_value(("big.json", big, "application/json"))
    app.run()
    assert spec(app) == TUTORIAL_LENET
    assert any("more than the" in e for e in messages(app.error))


def test_good_upload_replaces_the_stack_as_one_step(app: AppTest):
    uploaded = get_preset("same-lenet")
    app.file_uploader(key="upload").set_value(
        ("same.json", uploaded.to_json().encode(), "application/json")
    ).run()
    assert spec(app) == uploaded
    click(app, "undo")
    assert spec(app) == TUTORIAL_LENET


def test_export_and_compare(padded: AppTest):
    assert any("class SurgeryNet" in c for c in messages(padded.code))
    assert padded.download_button(key="download_code").proto.url.endswith(".py")
    assert padded.download_button(key="download_json").proto.url.endswith(".json")
    padded.selectbox(key="compare_preset").select("tutorial-lenet").run()
    texts = " ".join(messages(padded.markdown))
    assert "+ pad 2 before conv1" in texts
    assert "fc1 in_features 400 -> 576" in texts


def test_receptive_field_wording_after_the_flatten():
    report = trace(get_preset("padded-lenet"))
    conv1 = explain_block(report, 2)
    fc1 = explain_block(report, 8)

    assert receptive_field_text(conv1) == (
        "5x5 input pixels, padding included (jump 1 between neighbouring outputs)"
    )
    assert receptive_field_text(fc1) == (
        "the whole input: every feature depends on every input pixel"
    )
