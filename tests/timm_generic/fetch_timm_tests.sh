#!/usr/bin/env bash
# Fetch timm's generic model tests (tests/test_models.py of the pinned timm sdist) into tests/timm_generic/.cache/.
# Exit status 0: the file is there (already, or just downloaded); 1: it could not be fetched (offline).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
version="$("$python" -c 'import timm; print(timm.__version__)')"
dest="$here/.cache"
[[ -f "$dest/test_models.py" && "$(cat "$dest/VERSION" 2>/dev/null)" == "$version" ]] && exit 0
sdist_dir="$root/.cache/timm-sdist"
mkdir -p "$sdist_dir" "$dest"
sdist="$sdist_dir/timm-$version.tar.gz"
if [[ ! -f "$sdist" ]]; then
    timeout 120 "$python" -m pip download "timm==$version" --no-deps --no-binary :all: -d "$sdist_dir" -q || exit 1
fi
tar -xzf "$sdist" -O "timm-$version/tests/test_models.py" > "$dest/test_models.py.tmp"
mv "$dest/test_models.py.tmp" "$dest/test_models.py"
echo "$version" > "$dest/VERSION"
