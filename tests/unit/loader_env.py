"""What the exec modules' unit tests share: grains, the machine facts, a fake service
manager (tests/unit/conftest.py's ``loader`` fixture injects them as Salt's dunders)."""

import hashlib
import subprocess
from unittest.mock import MagicMock

from salt_ext.lib.util import command
from salt_ext.modules import slurm_node

DEBIAN_GRAINS = {
    "os": "Debian",
    "os_family": "Debian",
    "osrelease": "12",
    "host": "n1",
    "init": "systemd",
}


ALPINE_GRAINS = {
    "os": "Alpine",
    "os_family": "Alpine",
    "osrelease": "3.19",
    "host": "n1",
    "init": "openrc",
}


MACHINE = {
    "init_grain": "systemd",
    "systemd_booted": True,
    "pid1_name": "systemd",
    "accounts": {"munge": None, "slurm": None},
    "pkg_install_available": True,
}


ZERO_BYTES = (
    "scontrol show node -o n1 exited 1: "
    "slurm_load_node error: Zero Bytes were transmitted or received"
)


def service_salt():
    return {
        "cmd.which": MagicMock(side_effect=lambda name: f"/usr/sbin/{name}"),
        # the master serves no conf files unless a test says so (see _serve)
        "cp.hash_file": MagicMock(return_value=False),
        "cp.get_file_str": MagicMock(return_value=False),
    }


class FakeServices:
    """Stands in for lib.services.Service (tested on its own in test_node_services): records
    ``(action, name, manager)``; ``running``/``enabled`` per service name, ``fail`` maps an
    action to the ServiceError it raises."""

    def __init__(self):
        self.calls = []
        self.running = {}
        self.enabled = {}
        self.fail = {}
        self.made = []
        self.journal = {}

    def __call__(self, daemon, plan, manager, conf):
        name = slurm_node._service_name(daemon, plan)
        self.made.append((daemon, name, manager, conf))
        fake = self

        class One:
            def _do(self, action, result):
                fake.calls.append((action, name, manager))
                if action in fake.fail:
                    raise fake.fail[action]
                return result

            def running(self):
                return self._do("running", fake.running.get(name, True))

            def pid(self):
                return self._do("pid", 4000 if fake.running.get(name, True) else None)

            def start(self):
                return self._do("start", {"pid": 2, "changed": True, "notes": []})

            def stop(self):
                return self._do("stop", {"old_pid": 1, "changed": True, "notes": []})

            def restart(self):
                return self._do("restart", {"old_pid": 1, "pid": 2, "notes": ["zap"]})

            def enabled(self):
                return self._do("enabled", fake.enabled.get(name, True))

            def last_run(self):
                return self._do("last_run", fake.journal.get(name, []))

            def set_boot(self, enable):
                changed = fake.enabled.get(name, True) != enable
                fake.enabled[name] = enable
                return self._do("set_boot", changed)

        return One()

    def actions(self, *kinds):
        return [(a, n) for a, n, _ in self.calls if a in kinds]


def use_grains(env, grains):
    env.grains.clear()
    env.grains.update(grains)


def timeout_error(argv, bound):
    """The error command.run raises when ``argv`` outlives its ``bound``."""
    error = command.CommandFailed(argv, f"{' '.join(argv)}: timed out after {bound}s")
    error.__cause__ = subprocess.TimeoutExpired(argv, bound)
    return error


def content_hash(data):
    """``sha256:<hex>`` of ``data``, as the modules report file and key hashes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
