#!/usr/bin/env bash
# Installs a wheel into a fresh virtualenv where no Rust toolchain is reachable and runs
# examples/quickstart.py with that virtualenv's Python against the loopback endpoint; checks that
# `psremote --version`, psremote.__version__, importlib.metadata and the wheel's METADATA all
# say the Cargo workspace version. `make dist-check` runs it on the release wheel and on the
# wheel built from the sdist.
#
#   bindings-python/tests/dist/test_wheel.sh dist/psremote-*.whl
#
# The endpoint runs from the project's virtualenv ($PSREMOTE_PYTHON, as testserver/with-endpoint.sh
# uses it); only the quickstart runs in the clean one.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
fail() { echo "test_wheel: $*" >&2; exit 1; }

if [ "${1:-}" = "--quickstart" ]; then
  # Second stage, under testserver/with-endpoint.sh: PSREMOTE_URL/USER/PASSWORD are set.
  work=$2
  "$work/clean" "$work/venv/bin/python" "$root/examples/quickstart.py" > "$work/quickstart.out" 2>&1 ||
    { cat "$work/quickstart.out" >&2; fail "the quickstart failed in the clean virtualenv"; }
  exit 0
fi

wheel=$(cd "$(dirname "${1:?usage: test_wheel.sh WHEEL}")" && pwd)/$(basename "$1")
[ -f "$wheel" ] || fail "no wheel at $1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || fail "no version in Cargo.toml's [workspace.package]"

# PATH without any directory holding cargo, rustc or rustup (~/.cargo/bin, a rustup shim dir).
clean_path=
IFS=: read -r -a dirs <<< "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
for d in "${dirs[@]}"; do
  [ -x "$d/cargo" ] || [ -x "$d/rustc" ] || [ -x "$d/rustup" ] && continue
  clean_path=${clean_path:+$clean_path:}$d
done
mkdir -p "$work/home" "$work/run"
# Every clean-side command runs through this wrapper: an empty environment but for a HOME of its
# own, that PATH, CARGO_HOME/RUSTUP_HOME pointing at nothing, no pip configuration (no find-links,
# no index) and the endpoint's coordinates when there are any.
cat > "$work/clean" <<WRAP
#!/bin/sh
cd "$work/run" || exit 1
exec env -i HOME="$work/home" PATH="$work/venv/bin:$clean_path" LANG=C.UTF-8 \\
  CARGO_HOME="$work/no-cargo" RUSTUP_HOME="$work/no-rustup" PIP_CONFIG_FILE=/dev/null \\
  PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 no_proxy=127.0.0.1,localhost \\
  PSREMOTE_URL="\${PSREMOTE_URL:-}" PSREMOTE_USER="\${PSREMOTE_USER:-}" \\
  PSREMOTE_PASSWORD="\${PSREMOTE_PASSWORD:-}" PSREMOTE_TRUSTED_HOSTS="\${PSREMOTE_TRUSTED_HOSTS:-}" "\$@"
WRAP
chmod +x "$work/clean"

for tool in cargo rustc rustup; do
  if "$work/clean" sh -c "command -v $tool" >/dev/null 2>&1; then fail "$tool is reachable in the clean environment"; fi
done

python=${PYTHON:-python3}
base=$("$python" -c 'import sys; print(sys.base_prefix)')
"$work/clean" "$base/bin/python3" -m venv "$work/venv"
"$work/clean" "$work/venv/bin/python" -m pip install --quiet --no-index "$wheel" ||
  fail "the wheel did not install with --no-index (does it need something besides itself?)"

location=$("$work/clean" python -c 'import psremote; print(psremote.__file__)')
case $location in "$work/venv/"*) ;; *) fail "psremote was imported from $location, not the clean virtualenv" ;; esac

cli=$("$work/clean" psremote --version)
attribute=$("$work/clean" python -c 'import psremote; print(psremote.__version__)')
installed=$("$work/clean" python -c 'import importlib.metadata as m; print(m.version("psremote"))')
metadata=$("$work/clean" python -c 'import sys, zipfile
w = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in w.namelist() if n.endswith(".dist-info/METADATA"))
print(next(l.split(": ", 1)[1] for l in w.read(meta).decode().splitlines() if l.startswith("Version: ")))' "$wheel")
echo "versions: Cargo $version, psremote --version '$cli', __version__ $attribute, importlib.metadata $installed, METADATA $metadata"
[ "$cli" = "psremote $version" ] && [ "$attribute" = "$version" ] && [ "$installed" = "$version" ] &&
  [ "$metadata" = "$version" ] || fail "the versions disagree"

(cd "$root" && testserver/with-endpoint.sh "$0" --quickstart "$work")
sed 's/^/  | /' "$work/quickstart.out"
out=$work/quickstart.out
grep -Eq '^connected to http://127\.0\.0\.1:[0-9]+/wsman over NTLM \(.+\); PSRP [0-9.]+, pool [0-9A-Fa-f-]{36}$' "$out" ||
  fail "the quickstart did not report its connection"
grep -qx 'pipeline Completed' "$out" || fail "the pipeline did not complete"
grep -qx '  output:   hello from psremote' "$out" || fail "the output is missing"
grep -Eq '^  error:    an error \(.+\)$' "$out" || fail "the error record is missing"
grep -qx '  progress: demo: half 50%' "$out" || fail "the progress record is missing"
echo "test_wheel: $(basename "$wheel") installed without Rust and ran the quickstart"
