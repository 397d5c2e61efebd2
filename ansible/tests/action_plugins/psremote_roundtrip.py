"""Test action: the connection's put_file, then its fetch_file, driven by Ansible itself.

``ansible HOSTS -m psremote_roundtrip -a 'src=LOCAL remote=REMOTE dest=LOCAL'`` sends ``src`` to
``remote`` on the host with the connection plugin's put_file and brings it back to ``dest`` with
its fetch_file: no Windows module runs (the loopback endpoint cannot run Ansible's PowerShell
wrapper), so the transfer methods are what is tested, in Ansible's worker processes, with the
options Ansible resolved from the inventory.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False  # no remote temporary directory: that needs a PowerShell module
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        self._connection.put_file(args["src"], args["remote"])
        self._connection.fetch_file(args["remote"], args["dest"])
        result.update(changed=True, remote=args["remote"], dest=args["dest"])
        return result
