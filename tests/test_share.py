"""Share links and uploads: round trips, and clear refusals of damaged input."""

from __future__ import annotations

import base64
import json
import re
import zlib

import pytest

from surgery.presets import PRESETS, TUTORIAL_LENET
from surgery.share import (
    MAX_SHARE_CHARS,
    MAX_UPLOAD_BYTES,
    decode_spec,
    encode_spec,
    spec_from_upload,
)
from surgery.spec import FC, Conv, Spec, SpecError


def link_for(payload: bytes, version: str = "v1") -> str:
    """A link built by hand from raw bytes, as a tampered one might be."""
    body = base64.urlsafe_b64encode(zlib.compress(payload)).decode().rstrip("=")
    return f"{version}.{body}"


@pytest.mark.parametrize("name", PRESETS)
def test_link_round_trip_for_every_preset(name):
    spec = PRESETS[name].spec
    text = encode_spec(spec)

    assert decode_spec(text) == spec
    assert text.startswith("v1.")
    assert re.fullmatch(r"v1\.[A-Za-z0-9_-]+", text)
    assert len(text) < MAX_SHARE_CHARS


def test_link_carries_a_stack_that_does_not_run():
    broken = Spec(input=(1, 28, 28), num_classes=5, blocks=(Conv(6, 30), FC(5)))

    assert decode_spec(encode_spec(broken)) == broken


@pytest.mark.parametrize(
    "wrap",
    [
        "http://localhost:8501/?stack={}",
        "http://localhost:8501/?page=builder&stack={}&x=1",
        "?stack={}",
        "  {}\n",
    ],
    ids=["url", "url-more-params", "query", "whitespace"],
)
def test_decode_accepts_a_pasted_url(wrap):
    text = encode_spec(TUTORIAL_LENET)

    assert decode_spec(wrap.format(text)) == TUTORIAL_LENET


def test_link_is_compact_json():
    body = encode_spec(TUTORIAL_LENET).removeprefix("v1.")
    raw = zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))

    assert raw.decode() == json.dumps(TUTORIAL_LENET.to_dict(), separators=(",", ":"))


TAMPERED = {
    "too-long": (
        "v1." + "A" * MAX_SHARE_CHARS,
        (
            "share link: the stack text is 4,003 characters, more than the 4,000 "
            "allowed; share the JSON file instead"
        ),
    ),
    "version": (
        "v2.eJyrVkrLz1eyUkpKLFKqBQAdegQ0",
        (
            'share link: version "v2" is unknown; links start with "v1." - copy the '
            "whole link again or ask for a new one"
        ),
    ),
    "no-version": ("hello", 'share link: version "hello" is unknown'),
    "empty": ("", 'share link: version "" is unknown'),
    "bad-character": (
        "v1.eJyr@VkrL",
        (
            r'share link: the text is damaged \(character "@" is not URL-safe '
            r"base64\); "
            "copy the whole link again"
        ),
    ),
    "bad-base64-length": (
        "v1.abcde",
        (
            r"share link: the text is damaged \(it is not URL-safe base64\); copy the "
            "whole link again"
        ),
    ),
    "not-zlib": (
        "v1." + base64.urlsafe_b64encode(b"plain bytes here").decode().rstrip("="),
        (
            r"share link: the text is damaged \(it does not decompress\); copy the "
            "whole link again"
        ),
    ),
    "cut-short": (
        encode_spec(TUTORIAL_LENET)[:-12],
        r"share link: the text is (cut short|damaged)",
    ),
    "zip-bomb": (
        link_for(b" " * 2_000_000),
        (
            "share link: the stack expands to more than 65,536 bytes; share the JSON "
            "file instead"
        ),
    ),
    "bad-json": (
        link_for(b'{"input": [3, 32, 32],'),
        (
            r"share link: the text is not valid JSON \(Expecting property name "
            r"enclosed in double quotes at line 1, column 23\); "
            "fix the JSON syntax there"
        ),
    ),
    "not-object": (link_for(b"[1, 2]"), "share link: the file is not a JSON object"),
}


@pytest.mark.parametrize(("text", "message"), TAMPERED.values(), ids=TAMPERED.keys())
def test_tampered_links_raise_naming_the_problem(text, message):
    with pytest.raises(SpecError, match=message):
        decode_spec(text)


def test_zip_bomb_link_is_small_but_refused():
    text = TAMPERED["zip-bomb"][0]

    assert len(text) < MAX_SHARE_CHARS


def test_schema_error_keeps_block_and_field():
    data = TUTORIAL_LENET.to_dict()
    data["blocks"][3]["kernel_size"] = 0
    text = link_for(json.dumps(data).encode())

    with pytest.raises(
        SpecError,
        match=r"^share link: block 4 \(conv\): kernel_size 0 is out of range; use a "
        "whole number from 1 to 32",
    ) as caught:
        decode_spec(text)
    assert (caught.value.index, caught.value.field) == (4, "kernel_size")


# ---------------------------------------------------------------- uploads


@pytest.mark.parametrize("name", PRESETS)
def test_upload_round_trip_for_every_preset(name):
    spec = PRESETS[name].spec

    assert spec_from_upload(spec.to_json().encode()) == spec
    assert spec_from_upload(spec.to_json(indent=None).encode("utf-8-sig")) == spec


UPLOADS = {
    "too-big": (
        b" " * (MAX_UPLOAD_BYTES + 1),
        (
            "upload: the file is 65,537 bytes, more than the 65,536 allowed; upload a "
            r"spec JSON file \(a few KB\)"
        ),
    ),
    "empty": (
        b"",
        (
            "upload: the file is empty; upload a spec JSON file such as the one the "
            "builder downloads"
        ),
    ),
    "blank": (b" \n\t", "upload: the file is empty"),
    "binary": (
        b"\x89PNG\r\n\x1a\n",
        (
            r"upload: the file is not UTF-8 text \(byte 0x89 at position 0\); upload a "
            "spec JSON file"
        ),
    ),
    "bad-json": (
        b'{"input": [3, 32, 32]\n "blocks": []}',
        (
            r"upload: the text is not valid JSON \(Expecting ',' delimiter at line 2, "
            r"column 2\); fix the JSON syntax there"
        ),
    ),
    "unknown-field": (
        b'{"input": [3, 32, 32], "layers": []}',
        'upload: field "layers" is unknown; a spec takes input, num_classes and blocks',
    ),
    "bad-block": (
        b'{"blocks": [{"type": "conv", "kernel_size": 99}]}',
        r"upload: block 1 \(conv\): kernel_size 99 is out of range",
    ),
}


@pytest.mark.parametrize(("data", "message"), UPLOADS.values(), ids=UPLOADS.keys())
def test_bad_uploads_raise_naming_the_problem(data, message):
    with pytest.raises(SpecError, match=message):
        spec_from_upload(data)
