"""psremote quickstart: open a runspace pool over NTLM with message encryption, run a pipeline
that produces output, an error and progress, and print them.

    PSREMOTE_URL=http://server:5985/wsman PSREMOTE_USER='DOMAIN\\user' PSREMOTE_PASSWORD=... \\
        PSREMOTE_TRUSTED_HOSTS=server python examples/quickstart.py

NTLM proves the user but not the server, so over http the host must be named in
PSREMOTE_TRUSTED_HOSTS (passed as ``trusted_hosts``, WinRM's TrustedHosts); over https
(``https://server:5986/wsman``) a certificate that verifies is enough.

`make demo` runs it against the bundled loopback endpoint.
"""

from __future__ import annotations

import os
import sys

import psremote

SCRIPT = (
    "Write-Output 'hello from psremote'; "
    "Write-Error 'an error'; "
    "Write-Progress -Activity demo -Status half -PercentComplete 50; "
    "Get-Date"
)


def main() -> int:
    url = os.environ.get("PSREMOTE_URL")
    user = os.environ.get("PSREMOTE_USER")
    if not url or not user:
        print("set PSREMOTE_URL, PSREMOTE_USER and PSREMOTE_PASSWORD", file=sys.stderr)
        return 2
    # The password is read from PSREMOTE_PASSWORD by the client itself.
    trusted_hosts = os.environ.get("PSREMOTE_TRUSTED_HOSTS")
    with psremote.Client(url=url, username=user, auth="ntlm", trusted_hosts=trusted_hosts) as client:
        with client.runspace_pool() as pool:
            info = client.connection_info
            protection = info.encryption if info is not None else "?"
            print(f"connected to {client.url} over NTLM ({protection}); PSRP {pool.protocol_version}, pool {pool.id}")
            result = pool.run_ps(SCRIPT)

    print(f"pipeline {result.state}")
    for value in result.output:
        print(f"  output:   {value}")
    for error in result.errors:
        print(f"  error:    {error} ({error.fully_qualified_error_id}, {error.category_name})")
    for record in result.progress:
        print(f"  progress: {record.activity}: {record.status_description} {record.percent_complete}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
