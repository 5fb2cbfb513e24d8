"""Who may name an uploaded image: the API keys that uploaded it.

With API keys configured, each upload records the caller's key digest in a set per
image (``IMAGE_OWNERS``); content ids are sha256 of the bytes, so two keys uploading
the same bytes both own it. An edit or fit that names an image its caller did not
upload gets a 404, as if it did not exist (so ids cannot be probed). Without API keys
(the embedded default) there is one caller and nothing is recorded. ``share_uploads``
turns the scoping off on purpose: every key may name every upload.
"""

from __future__ import annotations

from typing import Any

from contract.keys import IMAGE_OWNERS


def record_upload(redis: Any, blob_id: str, owner: str) -> None:
    redis.sadd(IMAGE_OWNERS.format(id=blob_id), owner)


def owns_image(redis: Any, blob_id: str, owner: str) -> bool:
    return bool(redis.sismember(IMAGE_OWNERS.format(id=blob_id), owner))


def forget_image(redis: Any, blob_id: str) -> None:
    """The blob is gone (retention): so is its owner record."""
    redis.delete(IMAGE_OWNERS.format(id=blob_id))
