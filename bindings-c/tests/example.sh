#!/usr/bin/env bash
# Packaging test, as `make test` runs it: installs libpsremote into a throwaway prefix with
# `make install PREFIX=...` and checks the layout of a system library (libpsremote.so.<VERSION>
# stripped, with its SONAME libpsremote.so.<ABI> and the symbolic links, the separate debug file,
# libpsremote.a, the header, psremote.pc, the CMake package); then builds examples/c/agent.c from a
# copy of examples/c with its plain Makefile through pkg-config (PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig,
# system pkg-config directories disabled), shared and STATIC=1, and with its CMake project through
# find_package(psremote CONFIG) (CMAKE_PREFIX_PATH=$PREFIX), shared and -DPSREMOTE_STATIC=ON, and
# once more against a second installation made with DESTDIR and moved elsewhere (the CMake package
# is relocatable); checks that every shared agent records NEEDED libpsremote.so.<ABI> and no static
# one needs libpsremote at all; checks which versions find_package accepts; and runs every agent
# against the loopback endpoint, checking what they print and their exit statuses.
#
# <ABI> is the SONAME's series: the major version, or 0.MINOR before 1.0 (README, "Versions").
#
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

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IFS=. read -r v_major v_minor _ <<<"$version"
if [ "$v_major" = 0 ]; then abi=0.$v_minor; else abi=$v_major; fi
soname=libpsremote.so.$abi
real=libpsremote.so.$version
# Reads a command's whole output before searching it (grep -q on a pipe could stop the writer early,
# which pipefail would count as a failure).
has() { # extended regex, command...
  local text
  text=$("${@:2}" 2>/dev/null) || true
  grep -Eq -- "$1" <<<"$text"
}
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p'; }
check_needed() { # what, binary: a shared build needs libpsremote by its SONAME, and only by it
  if [ "$(needed "$2" | grep libpsremote)" = "$soname" ]; then ok "$1 records NEEDED $soname"
  else fail "$1 needs: $(needed "$2" | tr '\n' ' ')(want $soname)"; fi
}
check_static() { # what, binary
  if needed "$2" | grep -q libpsremote; then fail "$1 needs libpsremote although linked statically"
  else ok "$1 needs no libpsremote"; fi
}

echo "=== make install PREFIX=$prefix"
# shellcheck disable=SC2086
${MAKE:-make} --no-print-directory install PREFIX="$prefix" ${INSTALL_ARGS:-C_PROFILE=debug}
for f in include/psremote.h lib/$real lib/libpsremote.a lib/pkgconfig/psremote.pc \
  lib/cmake/psremote/psremote-config.cmake lib/cmake/psremote/psremote-config-version.cmake; do
  if [ -f "$prefix/$f" ] && [ ! -L "$prefix/$f" ]; then ok "installed $f"; else fail "missing $prefix/$f"; fi
done
for link in "$soname:$real" "libpsremote.so:$soname"; do
  if [ -L "$prefix/lib/${link%%:*}" ] && [ "$(readlink "$prefix/lib/${link%%:*}")" = "${link#*:}" ]; then
    ok "lib/${link%%:*} -> ${link#*:}"
  else
    fail "lib/${link%%:*} is not a link to ${link#*:}: $(ls -l "$prefix/lib/${link%%:*}" 2>&1)"
  fi
done
cmp -s include/psremote.h "$prefix/include/psremote.h" && ok "installed header is the committed one" \
  || fail "installed header differs from include/psremote.h"
got=$(readelf -d "$prefix/lib/$real" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$got" = "$soname" ] && ok "SONAME $soname" || fail "SONAME '$got' (want $soname)"
# Stripped: no symbol table, no debug sections; the exported functions stay in .dynsym.
if ! has '\.symtab|\.debug_' readelf -SW "$prefix/lib/$real"; then ok "installed $real is stripped"
else fail "installed $real keeps .symtab or debug sections"; fi
if has ' psr_version_number$' readelf -W --dyn-syms "$prefix/lib/$real"; then ok "psr_version_number exported"
else fail "psr_version_number not in .dynsym"; fi
# The debug information, when the build had any, is in lib/.debug, named by .gnu_debuglink.
debug=$prefix/lib/.debug/$real.debug
built=debug
[[ " ${INSTALL_ARGS:-C_PROFILE=debug} " == *" C_PROFILE=release "* ]] && built=release
if has '\.debug_info' readelf -SW "target/$built/libpsremote.so"; then
  if [ -f "$debug" ] && has '\.debug_info' readelf -SW "$debug" \
    && has "$real\.debug" readelf -W --string-dump=.gnu_debuglink "$prefix/lib/$real"; then
    ok "debug information in lib/.debug/$real.debug, named by .gnu_debuglink"
  else
    fail "no separate debug file $debug named by .gnu_debuglink"
  fi
fi
if ! has '\.debug_info' readelf -SW "$prefix/lib/libpsremote.a"; then ok "libpsremote.a has no debug sections"
else fail "libpsremote.a keeps debug sections"; fi

# pkg-config sees the prefix and nothing else.
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export PKG_CONFIG_LIBDIR=$prefix/lib/pkgconfig
unset C_INCLUDE_PATH CPATH LIBRARY_PATH LD_LIBRARY_PATH
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
echo "=== make (examples/c/Makefile, pkg-config)"
if make --no-print-directory -C "$work/src" agent CFLAGS="-O1 -g -Werror" >"$work/make.log" 2>&1; then
  ok "Makefile build"
  check_needed "Makefile build" "$work/src/agent"
else
  cat "$work/make.log"; fail "Makefile build"
fi
echo "=== make STATIC=1 (examples/c/Makefile, pkg-config)"
mkdir -p "$work/static"
cp examples/c/agent.c examples/c/Makefile "$work/static/"
if make --no-print-directory -C "$work/static" agent STATIC=1 CFLAGS="-O1 -g -Werror" >"$work/static.log" 2>&1; then
  ok "Makefile static build"
  check_static "Makefile static build" "$work/static/agent"
else
  cat "$work/static.log"; fail "Makefile static build"
fi

# CMake finds the package through CMAKE_PREFIX_PATH alone: no pkg-config, no package registry.
cmake_build() { # name, source, build dir, prefix, extra cmake arguments...
  local name=$1 src=$2 dir=$3 pfx=$4; shift 4
  echo "=== cmake $name (examples/c/CMakeLists.txt, find_package)"
  if env -u PKG_CONFIG_PATH -u PKG_CONFIG_LIBDIR cmake -S "$src" -B "$dir" -DCMAKE_PREFIX_PATH="$pfx" \
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_C_FLAGS="-Werror" "$@" >"$dir.log" 2>&1 \
    && cmake --build "$dir" >>"$dir.log" 2>&1; then
    ok "CMake build ($name)"
    return 0
  fi
  cat "$dir.log"; fail "CMake build ($name)"
  return 1
}
cmake_build shared "$work/src" "$work/build" "$prefix" && check_needed "CMake build" "$work/build/agent"
cmake_build static "$work/src" "$work/build-static" "$prefix" -DPSREMOTE_STATIC=ON \
  && check_static "CMake static build" "$work/build-static/agent"

# A staged installation (DESTDIR) moved to another directory: the CMake package finds its files
# relative to itself, and the agent loads the moved library through its SONAME link.
echo "=== make install DESTDIR=$work/stage PREFIX=/opt/psremote, moved to $work/moved"
# shellcheck disable=SC2086
${MAKE:-make} --no-print-directory install DESTDIR="$work/stage" PREFIX=/opt/psremote ${INSTALL_ARGS:-C_PROFILE=debug}
mv "$work/stage/opt/psremote" "$work/moved"
if [ -L "$work/moved/lib/$soname" ] && [ -e "$work/moved/lib/libpsremote.so" ]; then ok "staged installation has its links"
else fail "staged installation lacks lib/$soname or lib/libpsremote.so"; fi
if cmake_build moved "$work/src" "$work/build-moved" "$work/moved"; then
  check_needed "CMake build (moved)" "$work/build-moved/agent"
  if has "$work/moved/lib" readelf -d "$work/build-moved/agent"; then ok "moved agent's run path is the moved prefix"
  else fail "moved agent's run path: $(readelf -d "$work/build-moved/agent" | grep -E 'RPATH|RUNPATH')"; fi
fi

# Which requests find_package accepts: the ABI series (0.MINOR before 1.0, MAJOR after) at
# least the version asked for.
echo "=== find_package(psremote <version> CONFIG)"
mkdir -p "$work/findver"
cat >"$work/findver/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.19)
project(findver LANGUAGES NONE)
foreach(want IN LISTS WANTS)
  string(REPLACE "," ";" args "${want}")
  find_package(psremote ${args} CONFIG QUIET)
  if(psremote_FOUND)
    message(STATUS "want ${want}: found ${psremote_VERSION} abi ${psremote_VERSION_ABI}")
  else()
    message(STATUS "want ${want}: not found")
  endif()
  unset(psremote_DIR CACHE)
  unset(psremote_FOUND)
endforeach()
CMAKE
next_minor=$v_major.$((v_minor + 1))
next_major=$((v_major + 1))
if [ "$v_major" = 0 ]; then
  # Before 1.0: 0.MINOR series only.
  accepted=("$v_major" "$v_major.$v_minor" "$version" "$version,EXACT" "$v_major.$v_minor...$next_major")
  refused=("$next_minor" "$next_major" "$v_major.$v_minor.$((${version##*.} + 1))")
  [ "$v_minor" -gt 0 ] && refused+=("$v_major.$((v_minor - 1))")
else
  accepted=("$v_major" "$version" "$version,EXACT" "$v_major...$next_major")
  [ "$v_minor" -gt 0 ] && accepted+=("$v_major.$((v_minor - 1))")
  refused=("$next_minor" "$next_major" "$((v_major - 1))")
fi
wants=$(IFS=';'; echo "${accepted[*]};${refused[*]}")
if cmake -S "$work/findver" -B "$work/findver/build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF "-DWANTS=$wants" >"$work/findver.log" 2>&1; then
  for w in "${accepted[@]}"; do
    if grep -qxF -- "-- want $w: found $version abi $abi" "$work/findver.log"; then ok "find_package(psremote ${w//,/ }) accepts $version"
    else fail "find_package(psremote ${w//,/ }): $(grep -F -- "want $w:" "$work/findver.log")"; fi
  done
  for w in "${refused[@]}"; do
    if grep -qxF -- "-- want $w: not found" "$work/findver.log"; then ok "find_package(psremote ${w//,/ }) refuses $version"
    else fail "find_package(psremote ${w//,/ }): $(grep -F -- "want $w:" "$work/findver.log")"; fi
  done
else
  cat "$work/findver.log"; fail "find_package version project"
fi

agents=()
for a in src/agent static/agent build/agent build-static/agent build-moved/agent; do
  [ -x "$work/$a" ] && agents+=("$work/$a")
done

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
  expect "-V: the library and the header are $version" 0 "^libpsremote $version \\(compiled against psremote.h $version\\)\$" '' \
    "$agent" -V
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
