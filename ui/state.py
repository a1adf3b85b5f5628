"""Session state shared by every page: the stack being edited and its history."""

from __future__ import annotations

import streamlit as st

from surgery.presets import get_preset
from surgery.spec import Spec

SPEC_KEY = "spec"
DEFAULT_PRESET = "tutorial-lenet"


def init_state() -> None:
    """Set each session key once, before any page reads it."""
    if SPEC_KEY not in st.session_state:
        st.session_state[SPEC_KEY] = get_preset(DEFAULT_PRESET)


def current_spec() -> Spec:
    """The stack as the user last edited it; it may not be valid."""
    init_state()
    return st.session_state[SPEC_KEY]


def set_spec(spec: Spec) -> None:
    st.session_state[SPEC_KEY] = spec
