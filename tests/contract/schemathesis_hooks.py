"""What JSON Schema cannot say about the upload, told to schemathesis's generator.

The upload's schema says ``format: binary`` (multipart ``file``) and ``format: byte``
(base64 JSON ``data``), and that bytes that are not an image in an allowed format are
a 415. A schema cannot say "a decodable PNG", so without help every generated upload
would be random bytes. These strategies make the generator's valid uploads real
images (PNG, JPEG or WebP; 1-64 px a side; RGB, L or RGBA), so that positive cases
test the acceptance path; its negative cases still come from the schema.

    SCHEMATHESIS_HOOKS=tests.contract.schemathesis_hooks st run openapi/openapi.json ...
"""

from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _image(width: int, height: int, mode: str, fmt: str, colour: int) -> bytes:
    if fmt == "JPEG" and mode == "RGBA":
        mode = "RGB"
    image = Image.new(mode, (width, height), colour % (256 if mode == "L" else 2**24))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


IMAGES = st.builds(
    _image,
    st.integers(1, 64),
    st.integers(1, 64),
    st.sampled_from(["RGB", "L", "RGBA"]),
    st.sampled_from(["PNG", "JPEG", "WEBP"]),
    st.integers(0, 2**24 - 1),
)

schemathesis.openapi.format("binary", IMAGES)
schemathesis.openapi.format("byte", IMAGES.map(lambda b: base64.b64encode(b).decode()))
