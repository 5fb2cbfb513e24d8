"""The committed OpenAPI document: generated from the app, checked for drift by a test.

python -m service.openapi_doc            # rewrite openapi/openapi.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from service.app import create_app
from service.settings import Settings

PATH = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def document() -> dict[str, Any]:
    spec: dict[str, Any] = create_app(Settings(redis_url="")).openapi()
    return spec


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(render())
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
