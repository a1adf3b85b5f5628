"""The sidebar every page shows: where data and runs live, and the device.

The data folder, the run store and the number of runs that train at once come
from the environment (SURGERY_DATA, SURGERY_RUNS_DB, SURGERY_MAX_RUNS), so a
test or a second install can point them elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from surgery.train import resolve_device

DATA_ENV = "SURGERY_DATA"
RUNS_DB_ENV = "SURGERY_RUNS_DB"
MAX_RUNS_ENV = "SURGERY_MAX_RUNS"
DEFAULT_DATA = "data"
DEFAULT_RUNS_DB = "runs/runs.sqlite"


@dataclass(frozen=True)
class AppPaths:
    data_root: str
    runs_db: str
    # None: one run at a time on the CPU, one per GPU.
    max_runs: int | None = None


def app_paths() -> AppPaths:
    """The data folder and the run store, from the environment or the defaults."""
    return AppPaths(
        data_root=os.environ.get(DATA_ENV, DEFAULT_DATA),
        runs_db=os.environ.get(RUNS_DB_ENV, DEFAULT_RUNS_DB),
        max_runs=max_runs_setting(os.environ.get(MAX_RUNS_ENV, "")),
    )


def max_runs_setting(text: str) -> int | None:
    """SURGERY_MAX_RUNS as a whole number of at least 1; empty means the default."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"{MAX_RUNS_ENV} {text!r} is not a whole number of at least 1; set it "
            "to 1 (one run at a time) or more, or unset it for the default"
        )
    return int(text)


def device_label() -> str:
    """What 'auto' trains on here, with the GPU's name when there is one."""
    device = resolve_device("auto")
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def device_choices() -> list[str]:
    """The device names the Train and Experiments pages offer."""
    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices.append("cuda")
    if torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def render_sidebar() -> AppPaths:
    """Draw the shared sidebar and return the paths the page should use."""
    try:
        paths = app_paths()
    except ValueError as error:
        st.error(str(error))
        st.stop()
    with st.sidebar:
        st.caption("Where things are")
        st.markdown(
            f"**Data folder:** `{Path(paths.data_root)}`  \n"
            f"**Run store:** `{Path(paths.runs_db)}`  \n"
            f"**Device (auto):** {device_label()}"
        )
        st.caption(
            f"Set {DATA_ENV} or {RUNS_DB_ENV} before starting the app to move "
            f"them, and {MAX_RUNS_ENV} to train more than one run at a time."
        )
    return paths


def link_to(page: str, label: str, url_path: str) -> None:
    """A link to another page; a plain link where the page is not registered."""
    try:
        st.page_link(page, label=label)
    except st.errors.StreamlitAPIException:
        # A page run on its own (as in AppTest) knows no other page.
        st.markdown(f"[{label}](/{url_path})")
