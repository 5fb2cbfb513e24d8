#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run the whole test suite.
# Fails on any lint/type error, any failed test, any skipped test, or no tests at all.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 EDITSERVE_STRICT_SKIPS=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/docker-compose -f docker-compose.yml config --quiet
.venv/bin/hadolint Dockerfile
set +e
.venv/bin/python -m pytest --durations=15 "$@"  # the slowest tests, to keep the suite short
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$code"
