"""Several "hosts" on this machine for tests and benchmarks: network namespaces on a switch.

`Hosts(count, folder, rate=None)` (a context manager; `hosts_fixture` makes a pytest fixture
of it) makes `count` network namespaces, each a host with one interface `eth0` at its own
address 10.213.0.(i+1)/24 (and its loopback), joined through a bridge in one more namespace,
the switch, so that nothing of this is in the machine's own namespace: the test traffic goes
only between these addresses. With `rate` (tc's units: "1gbit", "100mbit"), every host's
link is shaped with a token bucket (`tc qdisc tbf`) both ways: on the host's `eth0` and on
the switch's port towards it. (tbf limits bandwidth only; this kernel has no netem to add
delay.) Everything is removed at the end, on failure too; namespaces left by a test run that
was killed are removed by the next one. Names hold the pid of the run, so runs never meet.

`host.command(argv)` runs a command on a host (`ip netns exec NAME ...`): processes keep this
machine's filesystem, users, pids and hostname, only the network is the host's. So the host
is where `cllm train --hosts` runs mpiexec (the first host: the proxies it starts connect back
to its address, and a host that is mpiexec's own is forked rather than launched).
`with host.entered():` puts the calling thread itself on the host for the block: a socket made
there (a server's, a client's) is the host's for good, and so is the network of a process
started there, so a test serves from a host in its own process (and reads what the server
saw) or starts a service there.
`hosts.launcher_exec` is a program called like ssh (`PROGRAM [-x] HOST COMMAND...`, the
command one shell string, as hydra's `-launcher-exec` calls it) that runs the command on the
host of that address.

MPI between namespaces (found out with MPICH 5.0.2 from the `mpich` wheel, device ch4:ucx
by default): MPICH takes which ranks share a node from hydra's placement (a proxy a host), so
ranks of different hosts never use MPICH's shared memory, and the shared hostname does no
harm (no UTS namespace is needed). But UCX, MPICH's network layer, decides that two
processes are on one machine from the kernel's boot id, the same in every namespace, and
then moves their data through shared memory (/dev/shm is shared too): by default not a byte
crosses `eth0`. `mpi_env` (UCX_TLS=tcp,self, UCX_NET_DEVICES=eth0) keeps UCX to TCP on the
host's interface; inside a host MPICH's own shared memory still carries the traffic.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

SUBNET = "10.213.0"  # host i is SUBNET.(i+1); no other address carries test traffic
PREFIX = "cllmt"  # namespace names: PREFIX-<pid>-<n>-<role>

_made = 0  # Hosts made by this process, for unique names


CLONE_NEWNET = 0x40000000  # setns(2)'s type of a network namespace (os.CLONE_NEWNET in 3.12)


class Unavailable(Exception):
    """Network namespaces cannot be made here (not root, no `ip`, no permission)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _namespaces() -> list[str]:
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def remove_stale() -> None:
    """Remove the namespaces of runs whose process is gone (a test run killed outright), if
    nothing runs in them any more."""
    for name in _namespaces():
        match = re.fullmatch(rf"{PREFIX}-(\d+)-\d+-\w+", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            if not _ip("netns", "pids", name, check=False).stdout.split():
                _ip("netns", "del", name, check=False)


def _setns(fd: int) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def rate_bits(rate: str) -> float:
    """tc's rate ("100mbit", "1gbit", "500kbit") in bits per second."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.lower())
    if not match:
        raise ValueError(f"rate {rate!r}: write it as tc does, such as 100mbit or 1gbit")
    return float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)]


class Host:
    """One namespace with `eth0` at `address`."""

    iface = "eth0"

    def __init__(self, index: int, name: str):
        self.index, self.name = index, name
        self.address = f"{SUBNET}.{index + 1}"

    def __repr__(self) -> str:
        return f"Host({self.index}, {self.name!r}, {self.address})"

    def command(self, argv: list) -> list[str]:
        """`argv` run on this host."""
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    @contextlib.contextmanager
    def entered(self):
        """The calling thread on this host for the block (the network of a thread is its
        own): what it connects, binds or starts there is the host's."""
        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{self.name}") as host:
            _setns(host.fileno())
            try:
                yield self
            finally:
                _setns(home.fileno())

    def counters(self) -> dict[str, int]:
        """Bytes sent (tx) and received (rx) on this host's link so far."""
        out = _ip("-n", self.name, "-s", "-j", "link", "show", self.iface).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"tx": stats["tx"]["bytes"], "rx": stats["rx"]["bytes"]}

    def pids(self) -> list[int]:
        """The processes running on this host."""
        return [int(p) for p in _ip("netns", "pids", self.name, check=False).stdout.split()]


class Hosts:
    """`count` hosts on one switch; see the module docstring."""

    # what MPICH's ranks need to talk over the hosts' links (see the module docstring)
    mpi_env = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": Host.iface}

    def __init__(self, count: int, folder: Path, rate: str | None = None):
        global _made
        if not 1 <= count <= 250:
            raise ValueError(f"{count} hosts: between 1 and 250")
        _made += 1
        stem = f"{PREFIX}-{os.getpid()}-{_made}"
        self.switch = f"{stem}-sw"
        self.hosts = [Host(i, f"{stem}-h{i}") for i in range(count)]
        self.folder = Path(folder)
        self.launcher_exec = self.folder / "netns-exec"
        self.rate = rate
        self._created: list[str] = []

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self):
        return iter(self.hosts)

    @property
    def addresses(self) -> list[str]:
        return [h.address for h in self.hosts]

    def start(self) -> Hosts:
        """Make the namespaces and links (removed again if that fails)."""
        if os.geteuid() != 0:
            raise Unavailable("network namespaces need root")
        if shutil.which("ip") is None or shutil.which("tc") is None:
            raise Unavailable("`ip` or `tc` is not installed (Debian: iproute2)")
        remove_stale()
        made = _ip("netns", "add", self.switch, check=False)
        if made.returncode != 0:
            raise Unavailable(f"ip netns add: {made.stderr.strip()}")
        self._created.append(self.switch)
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def _make(self) -> None:
        for h in self.hosts:
            _ip("netns", "add", h.name)
            self._created.append(h.name)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for h in self.hosts:
            port = f"p{h.index}"  # made in the switch: no name ever lives in the machine's own
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", h.iface,
                "netns", h.name)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", h.name, "addr", "add", f"{h.address}/24", "dev", h.iface)
            _ip("-n", h.name, "link", "set", h.iface, "up")
            _ip("-n", h.name, "link", "set", "lo", "up")
        self.shape(self.rate)
        self._write_launcher_exec()

    def shape(self, rate: str | None) -> None:
        """Limit every host's link to `rate` both ways (tbf), or lift the limit (None)."""
        self.rate = rate
        for h in self.hosts:
            for namespace, device in ((h.name, h.iface), (self.switch, f"p{h.index}")):
                subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev",
                                device, "root"], capture_output=True)
                if rate is None:
                    continue
                # a bucket of 2 ms at the rate, at least 64 KiB (a GSO packet); 100 ms queue
                burst = max(int(rate_bits(rate) / 8 * 0.002), 65536)
                subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev",
                                device, "root", "tbf", "rate", rate, "burst", str(burst),
                                "latency", "100ms"], check=True, capture_output=True)

    def _write_launcher_exec(self) -> None:
        cases = "\n".join(f"  {h.address}|{h.name}) ns={h.name} ;;" for h in self.hosts)
        self.launcher_exec.parent.mkdir(parents=True, exist_ok=True)
        self.launcher_exec.write_text(f"""#!/bin/sh
# Called like ssh (hydra's -launcher-exec): [options] HOST COMMAND..., COMMAND one shell
# string; runs it in HOST's network namespace (tests/netns.py).
while [ $# -gt 0 ] && [ "${{1#-}}" != "$1" ]; do shift; done  # hydra passes ssh's -x
host=$1; shift
case "$host" in
{cases}
  *) echo "$0: no such host: $host" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" sh -c "$*"
""")
        self.launcher_exec.chmod(0o755)

    def close(self) -> None:
        """End what still runs on the hosts and remove them (the links go with them)."""
        for name in reversed(self._created):
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)  # started by this run: nothing else enters these
                except ProcessLookupError:
                    pass
            _ip("netns", "del", name, check=False)
        self._created.clear()

    def __enter__(self) -> Hosts:
        return self if self._created else self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def hosts_fixture(count: int = 2, rate: str | None = None, scope: str = "module"):
    """A pytest fixture of `Hosts(count, ..., rate)`, skipping the test where namespaces
    cannot be made: `hosts = hosts_fixture(2)` in a test module."""
    import pytest

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory):
        try:
            made = Hosts(count, tmp_path_factory.mktemp("netns"), rate).start()
        except Unavailable as e:
            pytest.skip(f"cannot make network namespaces here: {e}")
        with made:
            yield made

    return fixture
