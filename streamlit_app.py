"""Builder: compose a ConvNet from blocks and watch every block's Output Shape."""

import streamlit as st

from ui import builder, builder_tools, state
from ui.builder_edit import sync_widgets
from ui.builder_table import render_shape_table
from ui.sidebar import render_sidebar

st.set_page_config(page_title="ConvNet surgery — Builder", layout="wide")
state.init_state()
builder_tools.restore_from_link()
sync_widgets(state.current_spec(), state.block_ids())
render_sidebar()

st.title("ConvNet surgery — Builder")
st.caption(
    "Stack blocks, edit their fields and watch each Output Shape; the flatten "
    "before the first fc is worked out for you."
)
builder.render_toolbar()
builder.render_notice()

report = builder.traced(state.current_spec())
quiz = builder_tools.quiz_view(report)
builder.render_status(report, quiz is not None)
link = builder_tools.publish_link(report)

editor, results = st.columns([6, 5], gap="medium")
with results:
    if quiz is not None:
        with st.container(border=True):
            builder_tools.render_quiz(report)
    st.subheader("Shape table")
    render_shape_table(report, quiz)
    if quiz is None:
        builder_tools.render_tabs(report, link)
    else:
        st.caption("Files, PyTorch code and Compare come back when the quiz is off.")
with editor:
    st.subheader("Stack")
    builder.render_editor(report, quiz)
