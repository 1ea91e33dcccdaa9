#!/usr/bin/env bash
# Run timm's own generic model tests on our models (see conftest.py here). Offline, when timm's tests cannot be
# fetched, fall back to our equivalent contract tests in tests/test_models.py (and say so).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
# Many small ops on shared cores: one intra-op thread is several times faster here than spinning thread pools.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if bash "$here/fetch_timm_tests.sh"; then
    exec .venv/bin/pytest -q -p no:cacheprovider "$here/.cache/test_models.py" "$@"
fi
echo "timm's tests/test_models.py could not be fetched (offline?): running our equivalent tests instead" >&2
exec .venv/bin/pytest -q tests/test_models.py -k timm_contract "$@"
