"""The sample runner and the C reference's header reader, tested on their own: what they accept,
and that each check fails when a sample breaks its rule (a runner that cannot fail proves
nothing about the pages)."""

from __future__ import annotations

import re
import socket
import sys
import threading
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from proxy import SampleProxy
from samples import DOCS, SampleError, extract
from test_samples import SampleFailure, run_page

sys.path.insert(0, str(DOCS / "_ext"))
import cheader  # noqa: E402

HEADER = DOCS.parent / "include" / "psremote.h"


def page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


# --- extraction ----------------------------------------------------------------------------------


def test_extract_reads_blocks_annotations_and_continuations(tmp_path):
    blocks = extract(
        page(
            tmp_path,
            "# T\n\n```python\nx = 1\n```\n\n% sample: kerberos\n% expect: 2\n\n```python\nprint(x + 1)\n```\n\n"
            "```text\nshown only\n```\n\n```console\n$ psremote run a \\\n    -c 'Get-Date'\noutput line\n$ pip install x\n```\n",
        )
    )
    assert [(b.kind, b.line, b.environment, b.expect) for b in blocks] == [
        ("python", 3, "default", []),
        ("python", 10, "kerberos", ["2"]),
        ("console", 18, "default", []),
    ]
    assert blocks[1].code == "print(x + 1)\n"
    assert blocks[2].commands == ["psremote run a \\\n    -c 'Get-Date'", "pip install x"]


@pytest.mark.parametrize(
    "text, why",
    [
        ("% sample: vpn\n```python\npass\n```\n", "unknown sample environment 'vpn'"),
        ("% sample: https\n```text\nx\n```\n", "does not run"),
        ("% expect: x\n\nSome prose.\n\n```python\npass\n```\n", "not right before a code block"),
        ("```python\npass\n", "never closed"),
        ("```c\nint main(void) { return 0; }\n```\n", "literalinclude it from examples/c"),
        ("```python\npass\n```\n% sample: cmd\n", "end of the page"),
    ],
)
def test_extract_refuses_wrong_markup(tmp_path, text, why):
    with pytest.raises(SampleError, match=re.escape(why)):
        extract(page(tmp_path, text))


# --- the proxy -----------------------------------------------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[Tuple[str, int]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(1024)
                conn.sendall(b"echo:" + data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()
    listener.close()


def ask(proxy: SampleProxy, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(1024)
            if not chunk:
                break
            reply += chunk
        if reply.startswith(b"HTTP/1.1 200"):
            sock.sendall(b"ping")
            while not reply.endswith(b"echo:ping"):
                chunk = sock.recv(1024)
                if not chunk:
                    break
                reply += chunk
        return reply


def test_proxy_tunnels_example_com_and_refuses_everything_else(echo_server):
    proxy = SampleProxy({5985: echo_server, 5986: echo_server}).start()
    try:
        assert ask(proxy, b"CONNECT win01.example.com:5985 HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"echo:ping")
        forwarded = ask(proxy, b"POST http://web01.example.com:5986/wsman HTTP/1.1\r\nHost: x\r\n\r\n")
        assert forwarded.startswith(b"echo:POST http://web01.example.com:5986/wsman")
        assert ask(proxy, b"CONNECT example.org:5985 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
        assert ask(proxy, b"CONNECT win01.example.com:22 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
        assert ask(proxy, b"CONNECT 127.0.0.1:5985 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
        assert ask(proxy, b"CONNECT offline01.example.com:5985 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 502")
        counts = proxy.snapshot()
        assert counts[("tunnel", "win01.example.com", 5985)] == 1
        assert counts[("forward", "web01.example.com", 5986)] == 1
        assert counts[("refused", "example.org", 5985)] == 1
        assert counts[("refused", "win01.example.com", 22)] == 1
        assert counts[("refused", "127.0.0.1", 5985)] == 1
        assert counts[("offline", "offline01.example.com", 5985)] == 1
    finally:
        proxy.stop()


# --- the runner's checks fail when they should ------------------------------------------------


NTLM_SAMPLE = (
    "```python\nimport psremote\n"
    'client = psremote.Client("win01.example.com", username="EXAMPLE\\\\alice", trusted_hosts=["win01.example.com"])\n'
    'print(client.run_ps("Write-Output hello").output)\n```\n'
)


def test_a_good_page_passes_and_reports_its_samples(world, tmp_path):
    report = run_page(page(tmp_path, "% expect: ['hello']\n" + NTLM_SAMPLE), world, tmp_path)
    assert report.startswith(f"{tmp_path / 'page.md'}: 1 of 1 samples ran")


@pytest.mark.parametrize(
    "text, why",
    [
        ("% sample: kerberos\n" + NTLM_SAMPLE, "which '% sample: kerberos' does not cover"),
        ("% expect: goodbye\n" + NTLM_SAMPLE, "the output lacks the expected 'goodbye'"),
        (NTLM_SAMPLE.replace("win01.example.com\"", "win01.example.org\"", 1), "asked the proxy for win01.example.org:5985"),
        ("```python\nraise SystemExit(3)\n```\n", "page.md:1 (python, environment default) failed"),
        ("```console\n$ psremote run win01.example.com -c 'Get-Date'\n```\n", "psremote exited with"),
        # The command line itself is not output: an expectation met only by it fails.
        ("% expect: Get-Date\n```console\n$ psremote run -u 'EXAMPLE\\alice' --trusted-hosts win01.example.com win01.example.com -c 'Write-Output x'\n```\n", "lacks the expected 'Get-Date'"),
        ("% sample: fleet\n" + NTLM_SAMPLE, "no block annotated ['fleet'] did what the annotation says"),
        ("```python\nprint('no network')\n```\n", "no sample reached an endpoint through the proxy"),
    ],
)
def test_the_runner_fails_a_page_that_breaks_a_rule(world, tmp_path, text, why):
    with pytest.raises(SampleFailure, match=re.escape(why)):
        run_page(page(tmp_path, text), world, tmp_path)


def test_a_sample_that_bypasses_the_proxy_fails_the_page(world, tmp_path):
    # A sample that learned an endpoint's real address (it cannot, from its environment; the
    # runner smuggles it in here) and connects directly is caught by the connection count.
    url = world.endpoints["http"].url
    text = NTLM_SAMPLE + (
        "```python\n"
        f'direct = psremote.Client(url="{url}", username="EXAMPLE\\\\alice", trusted_hosts=["127.0.0.1"], ignore_proxy=True)\n'
        'direct.run_ps("Get-Date")\n```\n'
    )
    with pytest.raises(SampleFailure, match="something reached it another way"):
        run_page(page(tmp_path, text), world, tmp_path)


# --- the header reader ---------------------------------------------------------------------------


SYNTHETIC = """/* banner: not documentation */

#ifndef X_H
#define X_H

#include <stdint.h>

// The answer.
#define X_ANSWER 42
#define X_STR_(n) #n
// Quoted.
#define X_QUOTE(n) X_STR_(n)

// Results.
enum x_result
#ifdef __cplusplus
  : uint32_t
#endif // __cplusplus
 {
  // Fine.
  X_RESULT_OK = 0,
  X_RESULT_BAD = 7,
};
#ifndef __cplusplus
typedef uint32_t x_result;
#endif // __cplusplus

// A handle.
typedef struct x_handle x_handle;

/**
 * Callbacks.
 */
typedef struct x_callbacks {
  // Passed back.
  void *userdata;
  int32_t (*on_line)(void *userdata,
                     const char *line);
} x_callbacks;

// Progress.
typedef int32_t (*x_progress_fn)(void *userdata, uint64_t done);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// Makes one.
x_result x_handle_new(const char *name,
                      struct x_handle **out);

#ifdef __cplusplus
}  // extern "C"
#endif // __cplusplus

#endif  /* X_H */
"""


def test_header_reader_knows_every_construct():
    items = {item.name: item for item in cheader.parse(SYNTHETIC)}
    assert sorted(items) == ["X_ANSWER", "X_QUOTE", "x_callbacks", "x_handle", "x_handle_new", "x_progress_fn", "x_result"]
    assert (items["X_ANSWER"].kind, items["X_ANSWER"].declaration, items["X_ANSWER"].doc) == ("macro", "42", ["The answer."])
    assert (items["X_QUOTE"].params, items["X_QUOTE"].declaration) == ("(n)", "X_STR_(n)")
    assert [(m.name, m.declaration, m.doc) for m in items["x_result"].members] == [
        ("X_RESULT_OK", "X_RESULT_OK = 0", ["Fine."]),
        ("X_RESULT_BAD", "X_RESULT_BAD = 7", []),
    ]
    assert items["x_handle"].kind == "opaque"
    assert items["x_callbacks"].doc == ["Callbacks."]
    assert [(m.name, m.declaration) for m in items["x_callbacks"].members] == [
        ("userdata", "void *userdata"),
        ("on_line", "int32_t (*on_line)(void *userdata, const char *line)"),
    ]
    assert items["x_progress_fn"].declaration == "int32_t (*x_progress_fn)(void *userdata, uint64_t done)"
    assert items["x_handle_new"].declaration == "x_result x_handle_new(const char *name, struct x_handle **out)"
    # A function taking a function pointer is named by its own name, not the parameter's.
    taking = cheader.parse("// Logs.\nvoid x_set_log(void (*cb)(void *userdata, const char *line), void *userdata);\n")
    assert [(item.kind, item.name) for item in taking] == [("function", "x_set_log")]


def test_header_reader_refuses_what_it_does_not_know():
    with pytest.raises(cheader.HeaderError, match=r"line 2: unknown construct 'static int counter = 0;'"):
        cheader.parse("// A counter.\nstatic int counter = 0;\n")


def test_every_function_of_the_real_header_is_documented_in_the_reference():
    text = HEADER.read_text()
    declared = set(re.findall(r"^[\w ]*?\**\b(psr_\w+)\(", text, flags=re.MULTILINE))
    items = cheader.parse(text)
    functions = {item.name for item in items if item.kind == "function"}
    assert declared and declared == functions
    assert all(item.doc for item in items), [item.name for item in items if not item.doc]
