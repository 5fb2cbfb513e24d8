"""Image uploads: stored once, by content id."""

from __future__ import annotations

import base64
import json
import re

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from service.deps import BlobsDep, OwnerDep, SettingsDep, get_redis
from service.errors import ApiError, ErrorResponse
from service.uploads import check_image
from store.ownership import record_upload

router = APIRouter(prefix="/v1/images", tags=["images"])

# multipart and base64 framing cost: base64 is 4/3 of the bytes, plus headers
_FRAMING = 64 * 1024


class ImagePublic(BaseModel):
    id: str = Field(description="sha256 of the uploaded bytes")
    width: int
    height: int
    format: str
    bytes: int


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"request body over {limit} bytes", "file")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"request body over {limit} bytes", "file")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # let request.form() parse what was already read
    return body


# base64 (standard alphabet, padded, at least one byte), optionally as a data URL: the
# document's pattern for ``data`` and the check the route runs are this one expression
BASE64_DATA = (
    r"^(data:[A-Za-z0-9.+/-]*(;[A-Za-z0-9.+=-]*)*;base64,)?"
    r"([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"
)
_BASE64_DATA = re.compile(BASE64_DATA)


def _b64decode(encoded: str) -> bytes:
    if not _BASE64_DATA.match(encoded):
        raise ApiError(422, "invalid_request", "data: not base64 (nor a base64 data URL)", "data")
    # the expression admits only padded base64 of the standard alphabet: it decodes
    return base64.b64decode(encoded.rpartition(",")[2], validate=True)


async def _image_bytes(request: Request, limit: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    body = await _read_limited(request, limit * 4 // 3 + _FRAMING)
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_request", "multipart body needs a 'file' part", "file")
        return await upload.read()
    if content_type.startswith("application/json"):
        try:
            payload = json.loads(body)
            encoded = payload["data"]
            if not isinstance(encoded, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            raise ApiError(
                422, "invalid_request", 'JSON body must be {"data": "<base64 image>"}', "data"
            ) from None
        return _b64decode(encoded)  # data URLs too: data:image/png;base64,....
    raise ApiError(
        415,
        "unsupported_media_type",
        "send multipart/form-data with a 'file' part, or application/json with base64 'data'",
        "content-type",
    )


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the image file (PNG, JPEG or WebP by default: "
                            "allowed_formats); bytes that are not one are a 415",
                        }
                    },
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "data": {
                            "type": "string",
                            "format": "byte",
                            "pattern": BASE64_DATA,
                            "minLength": 4,
                            "description": "the image file, base64 (or a base64 data URL); "
                            "bytes that are not an image in an allowed format are a 415",
                        }
                    },
                    "required": ["data"],
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=ImagePublic,
    openapi_extra=_UPLOAD_BODY,
    responses={
        401: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def upload_image(
    request: Request, settings: SettingsDep, blobs: BlobsDep, owner: OwnerDep
) -> ImagePublic:
    """Upload an image (multipart `file` or base64 JSON `data`); returns its content id.

    With API keys, the image is the uploading key's: other keys cannot name it (unless
    the deployment sets `share_uploads`)."""
    data = await _image_bytes(request, settings.max_upload_bytes)
    info = check_image(
        data,
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        formats=settings.allowed_formats,
    )
    blob_id = blobs.put(data)
    if owner is not None and not settings.share_uploads:
        record_upload(get_redis(request), blob_id, owner)
    return ImagePublic(
        id=blob_id, width=info.width, height=info.height, format=info.format, bytes=len(data)
    )
