"""Builder: compose a ConvNet from blocks and watch every block's Output Shape.

This entry script also lists the pages, so the sidebar names this one "Builder"
rather than after the file; every file in pages/ follows, in file-name order.
"""

import re
from pathlib import Path

import streamlit as st

from ui import builder, builder_tools, state
from ui.builder_edit import sync_widgets
from ui.builder_table import render_shape_table
from ui.sidebar import render_sidebar

PAGES_DIR = Path(__file__).resolve().parent / "pages"


def builder_page() -> None:
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
            st.caption(
                "Files, PyTorch code and Compare come back when the quiz is off."
            )
    with editor:
        st.subheader("Stack")
        builder.render_editor(report, quiz)


def page_title(path: Path) -> str:
    """'Train' from pages/1_Train.py, as Streamlit names a pages/ file."""
    return re.sub(r"^\d+_", "", path.stem).replace("_", " ")


def app_pages() -> list:
    """The Builder first (at the app's root URL), then every page in pages/."""
    pages = [st.Page(builder_page, title="Builder", url_path="builder", default=True)]
    for path in sorted(PAGES_DIR.glob("*.py")):
        title = page_title(path)
        pages.append(st.Page(path, title=title, url_path=title.replace(" ", "_")))
    return pages


st.navigation(app_pages()).run()
