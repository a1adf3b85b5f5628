"""Share links and uploaded files: a stack as text for `?stack=`, and back.

A link is 'v1.' followed by the compact JSON spec, zlib-compressed and written in
URL-safe base64 without padding. Everything coming back is checked before it is
used: its size, every decoding step (with a cap on the decompressed size, so a
small link cannot expand into gigabytes) and then the spec schema.
"""

from __future__ import annotations

import base64
import binascii
import json
import string
import zlib
from urllib.parse import parse_qs, urlsplit

from .spec import Spec, SpecError, spec_from_json

VERSION = "v1"
MAX_SHARE_CHARS = 4000
MAX_UPLOAD_BYTES = 64 * 1024
# The largest JSON a link may expand to; real stacks are a few KB.
MAX_JSON_BYTES = 64 * 1024
URLSAFE = frozenset(string.ascii_letters + string.digits + "-_")


def encode_spec(spec: Spec) -> str:
    """The URL-safe text for `?stack=`; the spec need not be valid shape-wise."""
    text = json.dumps(spec.to_dict(), separators=(",", ":"))
    packed = zlib.compress(text.encode("utf-8"), 9)
    body = base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")
    return f"{VERSION}.{body}"


def decode_spec(text: str) -> Spec:
    """The Spec in a share link's text (or a whole URL with `?stack=`).

    Raises SpecError naming what is wrong: too long, damaged, an unknown version,
    or a spec that breaks the schema.
    """
    text = _stack_param(text.strip())
    if len(text) > MAX_SHARE_CHARS:
        raise SpecError(
            f"share link: the stack text is {len(text):,} characters, more than "
            f"the {MAX_SHARE_CHARS:,} allowed; share the JSON file instead"
        )
    version, _, body = text.partition(".")
    if not body or version != VERSION:
        raise SpecError(
            f'share link: version "{version[:12]}" is unknown; links start with '
            f'"{VERSION}." - copy the whole link again or ask for a new one'
        )
    data = _inflate(_unbase64(body))
    return _parse(data.decode("utf-8", errors="replace"), "share link")


def spec_from_upload(data: bytes) -> Spec:
    """The Spec in an uploaded JSON file; raises SpecError saying what to fix."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise SpecError(
            f"upload: the file is {len(data):,} bytes, more than the "
            f"{MAX_UPLOAD_BYTES:,} allowed; upload a spec JSON file (a few KB)"
        )
    if not data.strip():
        raise SpecError(
            "upload: the file is empty; upload a spec JSON file such as the one "
            "the builder downloads"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"upload: the file is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
            f"position {exc.start}); upload a spec JSON file"
        ) from None
    return _parse(text, "upload")


def _stack_param(text: str) -> str:
    """The `stack` value when a whole URL or query string was pasted."""
    if "stack=" not in text:
        return text
    query = urlsplit(text).query or text.lstrip("?")
    values = parse_qs(query).get("stack")
    return values[0].strip() if values else text


def _unbase64(body: str) -> bytes:
    bad = next((c for c in body if c not in URLSAFE), None)
    if bad is not None:
        raise SpecError(
            f'share link: the text is damaged (character "{bad}" is not URL-safe '
            "base64); copy the whole link again"
        )
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise SpecError(
            "share link: the text is damaged (it is not URL-safe base64); "
            "copy the whole link again"
        ) from None


def _inflate(packed: bytes) -> bytes:
    """zlib-decompress at most MAX_JSON_BYTES; more is refused, not expanded."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, MAX_JSON_BYTES)
    except zlib.error:
        raise SpecError(
            "share link: the text is damaged (it does not decompress); "
            "copy the whole link again"
        ) from None
    if inflater.unconsumed_tail or (not inflater.eof and len(data) >= MAX_JSON_BYTES):
        raise SpecError(
            f"share link: the stack expands to more than {MAX_JSON_BYTES:,} bytes; "
            "share the JSON file instead"
        )
    if not inflater.eof or inflater.unused_data:
        raise SpecError(
            "share link: the text is cut short or has extra characters; "
            "copy the whole link again"
        )
    return data


def _parse(text: str, where: str) -> Spec:
    """spec_from_json, with `where` leading every message; index and field kept."""
    try:
        return spec_from_json(text)
    except SpecError as exc:
        message = str(exc).removeprefix("spec: ")
        raise SpecError(f"{where}: {message}", exc.index, exc.field) from None
