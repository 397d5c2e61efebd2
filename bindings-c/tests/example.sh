#!/usr/bin/env bash
# Packaging test, as `make test` runs it: installs libpsremote into a throwaway prefix with
# `make install PREFIX=...`, builds examples/c/agent.c from a copy of examples/c twice (its plain
# Makefile and its CMake project) seeing the installation only through pkg-config
# (PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig, system pkg-config directories disabled), and runs both
# agents against the loopback endpoint, checking what they print and their exit statuses.
#
# Environment:
#   INSTALL_ARGS      extra arguments for `make install` (default C_PROFILE=debug, so that
#                     make test does not build a release library just for this)
#   PSREMOTE_PYTHON   python with psremote_testserver installed (default .venv/bin/python)
#   MAKE              make command for the install step (default make)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=${PSREMOTE_PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
ep_pid=
cleanup() {
  if [ -n "$ep_pid" ]; then kill "$ep_pid" 2>/dev/null || true; wait "$ep_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
prefix=$work/prefix
failures=0
passes=0
ok() { passes=$((passes + 1)); echo "  ok   $*"; }
fail() { failures=$((failures + 1)); echo "  FAIL $*"; }

echo "=== make install PREFIX=$prefix"
# shellcheck disable=SC2086
${MAKE:-make} --no-print-directory install PREFIX="$prefix" ${INSTALL_ARGS:-C_PROFILE=debug}
for f in include/psremote.h lib/libpsremote.so lib/libpsremote.a lib/pkgconfig/psremote.pc; do
  if [ -e "$prefix/$f" ]; then ok "installed $f"; else fail "missing $prefix/$f"; fi
done
cmp -s include/psremote.h "$prefix/include/psremote.h" && ok "installed header is the committed one" \
  || fail "installed header differs from include/psremote.h"

# pkg-config sees the prefix and nothing else.
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export PKG_CONFIG_LIBDIR=$prefix/lib/pkgconfig
unset C_INCLUDE_PATH CPATH LIBRARY_PATH LD_LIBRARY_PATH
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
if [ "$(pkg-config --modversion psremote)" = "$version" ]; then ok "pkg-config --modversion psremote = $version"
else fail "pkg-config --modversion psremote: $(pkg-config --modversion psremote 2>&1) (want $version)"; fi
if pkg-config --validate psremote 2>/dev/null || ! pkg-config --help 2>&1 | grep -q -- --validate; then
  ok "psremote.pc is valid"
else
  fail "pkg-config --validate psremote"
fi
echo "  pkg-config --cflags --libs psremote: $(pkg-config --cflags --libs psremote)"
echo "  pkg-config --static --libs psremote: $(pkg-config --static --libs psremote)"

# Build from a copy, so that nothing in the source tree is found by relative paths.
cp -r examples/c "$work/src"
echo "=== make (examples/c/Makefile)"
if make --no-print-directory -C "$work/src" agent CFLAGS="-O1 -g -Werror" >"$work/make.log" 2>&1; then
  ok "Makefile build"
else
  cat "$work/make.log"; fail "Makefile build"
fi
echo "=== make STATIC=1 (examples/c/Makefile)"
mkdir -p "$work/static"
cp examples/c/agent.c examples/c/Makefile "$work/static/"
if make --no-print-directory -C "$work/static" agent STATIC=1 CFLAGS="-O1 -g -Werror" >"$work/static.log" 2>&1 \
  && ! readelf -d "$work/static/agent" | grep -q 'NEEDED.*libpsremote'; then
  ok "Makefile static build"
else
  cat "$work/static.log"; fail "Makefile static build"
fi
echo "=== cmake (examples/c/CMakeLists.txt)"
if cmake -S "$work/src" -B "$work/build" -DCMAKE_C_FLAGS="-Werror" >"$work/cmake.log" 2>&1 \
  && cmake --build "$work/build" >>"$work/cmake.log" 2>&1; then
  ok "CMake build"
else
  cat "$work/cmake.log"; fail "CMake build"
fi
agents=()
[ -x "$work/src/agent" ] && agents+=("$work/src/agent")
[ -x "$work/static/agent" ] && agents+=("$work/static/agent")
[ -x "$work/build/agent" ] && agents+=("$work/build/agent")

# --- the endpoint -------------------------------------------------------------------------------
printf 'DOMAIN:user:Passw0rd!\n' >"$work/users"
"$py" -m psremote_testserver --port 0 --users "$work/users" --control >"$work/url" 2>"$work/endpoint.log" &
ep_pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/url" ] && break
  kill -0 "$ep_pid" 2>/dev/null || { cat "$work/endpoint.log" >&2; echo "the endpoint failed to start" >&2; exit 1; }
  sleep 0.1
done
# NTLM over http to 127.0.0.1 needs the host named as WinRM's TrustedHosts would.
export PSREMOTE_URL PSREMOTE_USER='DOMAIN\user' PSREMOTE_PASSWORD='Passw0rd!' PSREMOTE_TRUSTED_HOSTS=127.0.0.1
PSREMOTE_URL=$(head -n 1 "$work/url")

matches() { [ -z "$1" ] || grep -Eq -- "$1" "$2"; } # an empty pattern checks nothing
expect() { # description, want_status, stdout_pattern, stderr_pattern, agent args...
  local what=$1 want=$2 out_re=$3 err_re=$4 status=0; shift 4
  timeout 120 "$@" >"$work/out" 2>"$work/err" </dev/null || status=$?
  if [ "$status" -eq "$want" ] && matches "$out_re" "$work/out" && matches "$err_re" "$work/err"; then
    ok "$what"
  else
    fail "$what: exit $status (want $want)"
    echo "    stdout:"; sed 's/^/      /' "$work/out"
    echo "    stderr:"; sed 's/^/      /' "$work/err"
  fi
}

for agent in "${agents[@]}"; do
  echo "=== ${agent#"$work"/}"
  expect "output and errors streamed, exit 0" 0 '^hello from the agent$' '^ERROR: .*something broke' \
    "$agent" "Write-Output 'hello from the agent'; Write-Error 'something broke'; Write-Warning 'careful'"
  grep -q '^WARNING: careful$' "$work/err" && ok "warning streamed" || fail "warning streamed"
  expect "objects printed as JSON" 0 '"Property1": ?"abc"' '' "$agent" New-TestObject -Count 2 -Properties 1 -Size 3
  [ "$(grep -c Property1 "$work/out")" -eq 2 ] && ok "two objects" || fail "two objects"
  expect "failed pipeline, exit 1" 1 '^before$' 'agent-says-no' "$agent" "Write-Output before; Invoke-Failure agent-says-no"
  expect "timeout stops the pipeline, exit 1" 1 '^waiting$' 'stopp' "$agent" -t 500 "Write-Output waiting; Invoke-Stall"
  expect "result JSON" 0 '"state": ?"Completed"' '' "$agent" -j "1+2"
  expect "usage error, exit 2" 2 '' 'usage' "$agent"
  PSREMOTE_PASSWORD=wrong expect "wrong password, exit 2" 2 '' 'AUTHENTICATION' "$agent" "1"
  PSREMOTE_TRUSTED_HOSTS= expect "NTLM without trusted hosts refused, exit 2" 2 '' 'PSR_RESULT_POLICY.*trusted_hosts' \
    "$agent" "1"
  expect "connection info" 0 '^3$' '"encryption": ?"message-encryption"' "$agent" -i "1+2"
done

# Ctrl-C while the pipeline runs: SIGINT reaches the agent's signal thread, which stops the pipeline.
if [ ${#agents[@]} -gt 0 ]; then
  agent=${agents[0]}
  status=0
  "$agent" "Write-Output running; Invoke-Stall" >"$work/out" 2>"$work/err" </dev/null &
  apid=$!
  for _ in $(seq 1 100); do grep -q running "$work/out" 2>/dev/null && break; sleep 0.1; done
  kill -INT "$apid"
  wait "$apid" || status=$?
  if [ "$status" -eq 1 ] && grep -q 'stopped' "$work/err"; then ok "SIGINT stops the pipeline, exit 1"
  else fail "SIGINT: exit $status"; cat "$work/err"; fi
fi

state=$("$py" -c 'import json, sys, urllib.request; s = json.load(urllib.request.urlopen(sys.argv[1])); s["logons"] = len(s.get("logons", [])); print(json.dumps(s))' \
  "${PSREMOTE_URL%/wsman}/_control/state" 2>/dev/null || true)
echo "control state at the end: ${state:-unavailable}"

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
