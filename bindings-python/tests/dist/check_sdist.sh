#!/usr/bin/env bash
# Proves the sdist is complete: it holds every tracked file of the core and the Python binding,
# the workspace manifest and lock file, the README, both license files and the typing files; and
# it builds from scratch: `pip wheel` on the archive alone, in pip's isolated build environment
# (maturin from PyPI), no pip cache, a Cargo target directory of its own, --locked. A dev-profile
# build keeps CI time down (the release build is `make dist`'s job). `make dist-check` then runs
# test_wheel.sh on the wheel it leaves in OUTDIR.
#
#   bindings-python/tests/dist/check_sdist.sh dist/psremote-X.Y.Z.tar.gz OUTDIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
fail() { echo "check_sdist: $*" >&2; exit 1; }
sdist=$(cd "$(dirname "${1:?usage: check_sdist.sh SDIST OUTDIR}")" && pwd)/$(basename "$1")
out=${2:?usage: check_sdist.sh SDIST OUTDIR}
python=${PYTHON:-python3}
top=$(basename "$sdist" .tar.gz)

listing=$(tar tzf "$sdist" | sed "s|^$top/||")
wanted="pyproject.toml Cargo.toml Cargo.lock README.md LICENSE-MIT LICENSE-APACHE PKG-INFO"
wanted+=" $(cd "$root" && git ls-files core/Cargo.toml core/src bindings-python/Cargo.toml bindings-python/src bindings-python/python | tr '\n' ' ')"
missing=0
for f in $wanted; do
  grep -qxF "$f" <<< "$listing" || { echo "check_sdist: missing from the sdist: $f" >&2; missing=1; }
done
[ "$missing" = 0 ] || fail "the sdist is incomplete"
for f in bindings-python/python/psremote/_native.pyi bindings-python/python/psremote/py.typed; do
  grep -qxF "$f" <<< "$listing" || fail "missing from the sdist: $f"
done
echo "check_sdist: $(basename "$sdist") ($(du -k "$sdist" | cut -f1) KiB) holds all $(wc -w <<< "$wanted") expected files"

rm -rf "$out"
mkdir -p "$out"
target=$out/cargo-target
venv=$out/venv
"$python" -m venv "$venv"
# MATURIN_PEP517_ARGS reaches maturin's PEP 517 backend: a dev build, the sdist's own Cargo.lock.
CARGO_TARGET_DIR=$target MATURIN_PEP517_ARGS="--profile dev --locked" \
  "$venv/bin/python" -m pip wheel --quiet --no-deps --no-cache-dir --disable-pip-version-check \
  -w "$out" "$sdist" || fail "the sdist did not build"
rm -rf "$target"
ls "$out"/*.whl >/dev/null 2>&1 || fail "no wheel came out of the sdist"
echo "check_sdist: built $(basename "$out"/*.whl) from the sdist"
