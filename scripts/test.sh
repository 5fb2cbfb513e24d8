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
# two pytest workers, whole files each (a file's fixtures stay in one process), one torch
# thread each (tests/conftest.py): 854-965 s against 1,326 s serially, clean clones, 2 cores
.venv/bin/python -m pytest -n 2 --dist loadfile --durations=15 "$@"  # the slowest tests
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$code"
