"""pypsrp 1.0.0b1 (its ``psrp`` package) against the endpoint's out-of-process mode, in pypsrp's own
virtualenv (.venv-psrp: it cannot live beside pypsrp 0.9.1). Run by test_outofproc_pypsrp.py:

    .venv-psrp/bin/python psrp10_client.py process [--async] [--workdir DIR] SCENARIO -- COMMAND...
    .venv-psrp/bin/python psrp10_client.py ssh SCENARIO PORT KNOWN_HOSTS USER (--key FILE | --password PW) [--subsystem NAME]

Prints one JSON object: what the scenario saw, or ``{"failure": "<type>: <message>"}`` (status 1).
Nothing here imports the endpoint: this is an independent client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import warnings
from typing import Any, Dict

warnings.simplefilter("ignore")  # asyncssh's DSA deprecation warnings from cryptography

import psrp  # noqa: E402


class UI(psrp.PSHostUI):
    def read_line(self) -> str:
        return "typed answer"


def _strings(records) -> list:
    return [getattr(record, "Message", None) or str(record) for record in records]


def basic_sync(info) -> Dict[str, Any]:
    with psrp.SyncRunspacePool(info) as rp:
        ps = psrp.SyncPowerShell(rp)
        ps.add_script("Write-Output 'hello'; Write-Warning 'careful'; Write-Error 'oops'")
        output = ps.invoke()
        numbers = psrp.invoke_ps(rp, "Write-Output 1 2 3")[0]
        piped = psrp.SyncPowerShell(rp)
        piped.add_command("Write-Output")
        echoed = piped.invoke(["a", "b"])
        failed = psrp.SyncPowerShell(rp)
        failed.add_command("Invoke-Failure").add_parameters(Message="it broke")
        try:
            failed.invoke()
            thrown = None
        except psrp.PipelineFailed as exc:
            thrown = str(exc)
    return {
        "output": output,
        "warning": _strings(ps.streams.warning),
        "error": _strings(ps.streams.error),
        "had_errors": ps.had_errors,
        "numbers": numbers,
        "echoed": echoed,
        "thrown": thrown,
    }


async def basic_async(info) -> Dict[str, Any]:
    async with psrp.AsyncRunspacePool(info) as rp:
        ps = psrp.AsyncPowerShell(rp)
        ps.add_script("Write-Output 'hello async'; Write-Warning 'careful'; Write-Error 'oops'")
        output = await ps.invoke()
        second = psrp.AsyncPowerShell(rp)
        second.add_command("Write-Output").add_parameters(InputObject="again")
        again = await second.invoke()
    return {"output": output, "warning": _strings(ps.streams.warning), "error": _strings(ps.streams.error), "again": again}


def host_sync(info) -> Dict[str, Any]:
    host = psrp.PSHost(ui=UI())
    with psrp.SyncRunspacePool(info, host=host) as rp:
        ps = psrp.SyncPowerShell(rp, host=host)
        ps.add_command("Read-Host")
        return {"output": ps.invoke()}


async def host_async(info) -> Dict[str, Any]:
    host = psrp.PSHost(ui=UI())
    async with psrp.AsyncRunspacePool(info, host=host) as rp:
        ps = psrp.AsyncPowerShell(rp, host=host)
        ps.add_command("Read-Host")
        return {"output": await ps.invoke()}


def secure_sync(info) -> Dict[str, Any]:
    with psrp.SyncRunspacePool(info) as rp:
        rp.exchange_key()
        value = psrp.invoke_ps(rp, "ConvertTo-SecureString 'secret' -AsPlainText -Force")[0][0]
        return {"type": type(value).__name__, "plain": value.decrypt()}


async def secure_async(info) -> Dict[str, Any]:
    async with psrp.AsyncRunspacePool(info) as rp:
        await rp.exchange_key()
        ps = psrp.AsyncPowerShell(rp)
        ps.add_script("ConvertTo-SecureString 'secret' -AsPlainText -Force")
        value = (await ps.invoke())[0]
        return {"type": type(value).__name__, "plain": value.decrypt()}


def stop_sync(info) -> Dict[str, Any]:
    with psrp.SyncRunspacePool(info) as rp:
        ps = psrp.SyncPowerShell(rp)
        ps.add_script("Write-Output 'before'; Invoke-Stall")
        output = psrp.SyncPSDataCollection()
        task = ps.invoke_async(output_stream=output)
        for _ in range(200):  # the output proves the pipeline runs; no clock decides the outcome
            if len(output):
                break
            time.sleep(0.05)
        ps.stop()
        try:
            task.wait()
            stopped = False
        except psrp.PipelineStopped:
            stopped = True
        after = psrp.invoke_ps(rp, "Write-Output 'still usable'")[0]
        return {"state": ps.state.name, "stopped": stopped, "output": list(output), "after": after}


async def stop_async(info) -> Dict[str, Any]:
    async with psrp.AsyncRunspacePool(info) as rp:
        ps = psrp.AsyncPowerShell(rp)
        ps.add_script("Write-Output 'before'; Invoke-Stall")
        output = psrp.AsyncPSDataCollection()
        task = await ps.invoke_async(output_stream=output)
        for _ in range(200):
            if len(output):
                break
            await asyncio.sleep(0.05)
        await ps.stop()
        try:
            await task
            stopped = False
        except psrp.PipelineStopped:
            stopped = True
        again = psrp.AsyncPowerShell(rp)
        again.add_script("Write-Output 'still usable'")
        return {"state": ps.state.name, "stopped": stopped, "output": list(output), "after": await again.invoke()}


def _files(workdir: str) -> Dict[str, Any]:
    """A 1 MiB file (several input messages and output chunks) and an empty one to send."""
    import hashlib
    import os

    data = bytes(range(256)) * 4096 + b"tail"
    paths = {}
    for name, content in (("big", data), ("empty", b"")):
        path = os.path.join(workdir, f"{name}.src")
        with open(path, "wb") as out:
            out.write(content)
        paths[name] = path
    return {"paths": paths, "sha1": {"big": hashlib.sha1(data).hexdigest(), "empty": hashlib.sha1(b"").hexdigest()}}


def _sha1(path) -> str:
    import hashlib

    with open(path, "rb") as stream:
        return hashlib.sha1(stream.read()).hexdigest()


def files_sync(info, workdir: str) -> Dict[str, Any]:
    """copy_file and fetch_file (pypsrp 1.0's own scripts) on one pool; the endpoint shares this filesystem."""
    import os

    made = _files(workdir)
    result: Dict[str, Any] = {"expected": made["sha1"]}
    with psrp.SyncRunspacePool(info) as rp:
        for name, path in made["paths"].items():
            remote = os.path.join(workdir, f"{name}.remote")
            result[f"copy_{name}"] = psrp.copy_file(rp, path, remote)
            result[f"copied_{name}"] = _sha1(remote)
            back = psrp.fetch_file(rp, remote, os.path.join(workdir, f"{name}.back"))
            result[f"fetched_{name}"] = _sha1(back)
        try:
            psrp.fetch_file(rp, os.path.join(workdir, "missing"), os.path.join(workdir, "x"))
            result["missing"] = None
        except psrp.PipelineFailed as exc:
            result["missing"] = str(exc)
    return result


SYNC = {"basic": basic_sync, "host": host_sync, "secure": secure_sync, "stop": stop_sync}
ASYNC = {"basic": basic_async, "host": host_async, "secure": secure_async, "stop": stop_async}


def _ssh_info(args):
    import asyncssh

    options = asyncssh.SSHClientConnectionOptions(
        username=args.user,
        client_keys=[args.key] if args.key else None,
        password=args.password,
        known_hosts=args.known_hosts,
        agent_path=None,
    )
    return psrp.SSHInfo("127.0.0.1", port=args.port, subsystem=args.subsystem, options=options)


def main(argv) -> int:
    parser = argparse.ArgumentParser()
    carriers = parser.add_subparsers(dest="carrier", required=True)
    process = carriers.add_parser("process")
    process.add_argument("scenario")
    process.add_argument("--async", dest="use_async", action="store_true")
    process.add_argument("--workdir", help="for the files scenario")
    process.add_argument("command", nargs=argparse.REMAINDER)
    ssh = carriers.add_parser("ssh")  # pypsrp's SSH connection is asyncio only
    ssh.add_argument("scenario")
    ssh.add_argument("port", type=int)
    ssh.add_argument("known_hosts")
    ssh.add_argument("user")
    ssh.add_argument("--key")
    ssh.add_argument("--password")
    ssh.add_argument("--subsystem", default="powershell")
    args = parser.parse_args(argv)
    try:
        if args.carrier == "process":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            info = psrp.ProcessInfo(executable=command[0], arguments=command[1:])
            if args.scenario == "files":
                result = files_sync(info, args.workdir)
            elif args.use_async:
                result = asyncio.run(ASYNC[args.scenario](info))
            else:
                result = SYNC[args.scenario](info)
        else:
            result = asyncio.run(ASYNC[args.scenario](_ssh_info(args)))
    except Exception as exc:  # noqa: BLE001 - reported to the test as data
        print(json.dumps({"failure": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
