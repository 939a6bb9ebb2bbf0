#!/bin/sh
# pyrun.sh PYTHON ARGS... - run the e2e Python, or fail saying how to get it.
py="$1"
shift
if [ ! -x "$py" ]; then
    echo "e2e: $py does not exist. Create the test venv first:" >&2
    echo "  scripts/lumkey test    (or: python3 -m venv .venv && .venv/bin/pip install -r tests/e2e/requirements.txt)" >&2
    exit 1
fi
if ! "$py" -c "import openai, pytest, psycopg" 2>/dev/null; then
    echo "e2e: $py lacks openai, pytest or psycopg: .venv/bin/pip install -r tests/e2e/requirements.txt" >&2
    exit 1
fi
exec "$py" "$@"
