"""pypsrp 0.9.1's Client.copy / Client.fetch against an endpoint, for interop tests in other
languages: ``python -m psremote_testserver.pypsrp_files copy|fetch PORT USER PASSWORD SRC DEST``.
Prints ``OK <returned path>`` or ``ERR <exception type>: <message>``."""

from __future__ import annotations

import sys

from pypsrp.client import Client


def main(argv) -> int:
    op, port, user, password, src, dest = argv
    client = Client("127.0.0.1", port=int(port), username=user, password=password, ssl=False, auth="ntlm")
    try:
        if op == "copy":
            out = client.copy(src, dest)
        else:
            out = client.fetch(src, dest)
    except Exception as e:  # noqa: BLE001 - reported to the caller as text
        print(f"ERR {type(e).__name__}: {e}")
        return 1
    print(f"OK {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
