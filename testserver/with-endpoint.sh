#!/usr/bin/env bash
# Starts the loopback WinRM endpoint with a throwaway user, runs the given command with
# PSREMOTE_URL/USER/PASSWORD set, then stops the endpoint.
set -euo pipefail
py=${PSREMOTE_PYTHON:-.venv/bin/python}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
printf 'DEMO:demo:Demo-Passw0rd\n' > "$dir/users"
"$py" -m psremote_testserver --port 0 --users "$dir/users" > "$dir/url" &
pid=$!
for _ in $(seq 1 300); do
  [ -s "$dir/url" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "the endpoint failed to start" >&2; exit 1; }
  sleep 0.1
done
export PSREMOTE_URL=$(head -n 1 "$dir/url") PSREMOTE_USER='DEMO\demo' PSREMOTE_PASSWORD=Demo-Passw0rd
# NTLM proves the user, not the server: name the loopback host as WinRM TrustedHosts would.
export PSREMOTE_TRUSTED_HOSTS=127.0.0.1
echo "loopback endpoint at $PSREMOTE_URL"
"$@"
