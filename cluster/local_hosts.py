#!/usr/bin/env python3
"""Four Linux hosts on one machine, to run `cluster/four_node.yaml` and `cluster/README.md` end to end.

    python cluster/local_hosts.py up      # namespaces, bridge, sshd, key, generated YAML
    python cluster/local_hosts.py run     # cluster/README.md steps 2-8 against those hosts
    python cluster/local_hosts.py down    # removes every namespace, interface and process it made

Each host is a network namespace with its own loopback and an address on a private bridge that
lives in a namespace of its own (no link to this machine's network, so nothing the hosts send can
leave the box), plus a mount, UTS and PID namespace: a private /tmp and /dev/shm, a private home
bind-mounted over /root, its own hostname and its own process table (so `ray stop` on one host
cannot see another host's Ray). sshd runs as the host's PID 1, so killing it powers the host off.
A fifth namespace, `client`, is "your computer": the `ray` commands of the README run there, with
a private HOME (its ~/.ray/auth_token) and /tmp, and a known_hosts that holds the hosts' keys.

The hosts cannot reach a package index. Their pip reads a wheelhouse of exactly the versions
installed in the driver's venv (symlinks to this machine's local package mirrors where they
hold the file, `pip download` for the rest), through a per-host ~/.config/pip/pip.conf: the YAML's
setup commands run unchanged. `up --venv seed` gives every host a home that already holds
~/dfl_venv with those dependencies (an overlay over one image built once), so `ray up` only
installs the project itself; `--venv install` (the default) makes `ray up` install everything.

Must run as root on Linux with iproute2, util-linux (unshare, nsenter), openssh-server/-client
and rsync. `check` says whether this machine allows it. Generated files live under --workdir.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The driver's virtual environment: the one running this script, else the checkout's .venv.
VENV = Path(sys.prefix) if sys.prefix != sys.base_prefix else REPO / ".venv"
CLUSTER_YAML = REPO / "cluster" / "four_node.yaml"
CLUSTER_README = REPO / "cluster" / "README.md"
DEFAULT_WORKDIR = Path("/var/tmp/dfl_local_hosts")  # not /tmp: each host's /tmp is private
DEFAULT_CACHE = Path("/var/tmp/dfl_local_hosts_cache")
DEFAULT_PREFIX = "dflh"
DEFAULT_SUBNET = "10.213.0"
HOST_HOME = "/root"  # the SSH user is root; its home on every host
SSHD = "/usr/sbin/sshd"
REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "mount", "ssh", "ssh-keygen", "rsync", "bash")
README_NAME = "lenet_cluster_1"  # the run name the README uses; replaced by --name
# Small and quick: 4 nodes (one per host), 3 rounds, every node aggregates its 3 peers' models
# each round and seals a block per own transaction, so every chain has blocks to verify.
DEFAULT_JOB_ARGS = (
    "--rounds 3 --nodes 4 --topology full --malicious 1 --buffer-size 3 --ledger.block_size 1 "
    "--eval-every 1"
)

# `run --faults`: enough rounds for a link cut and a raylet kill between rounds that go well; an
# evaluation every round, so metrics.csv shows each round's end (the faults are timed by it). The
# cut lasts at least LINK_DOWN_MIN_S while the three other nodes go on at 0.3-0.6 s a round, so
# the job needs room for up to ~35 rounds during the cut alone, then the restore and the kill.
FAULT_JOB_ARGS = DEFAULT_JOB_ARGS.replace("--rounds 3", "--rounds 60")
FAULT_LINK_HOST = "h2"  # its link is cut, then restored
FAULT_KILL_HOST = "h3"  # its raylet is killed
# Ray's GCS declares a node dead after 5 failed health checks (10 s timeout each, 3 s apart:
# about a minute when the link drops every packet), and a raylet that cannot reach the GCS for
# 60 s exits. A cut shorter than this stays a network fault, not a node death.
LINK_DOWN_MAX_S = 40.0
LINK_DOWN_MIN_S = 20.0


# ----------------------------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    print(f"[local_hosts {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(args: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, text=True, **kw)


def quiet(args: list[str]) -> bool:
    """Run args, True when it exits 0; output discarded."""
    return subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


class Layout:
    """Names, addresses and paths of one harness instance."""

    def __init__(self, workdir: Path, prefix: str, subnet: str, n_hosts: int = 4,
                 cache: Path | None = None) -> None:
        self.workdir = workdir
        self.prefix = prefix
        self.subnet = subnet
        self.hosts = [f"h{i}" for i in range(n_hosts)]  # h0 is the head
        self.bridge_ns = f"{prefix}-net"
        self.state_file = workdir / "state.json"
        self.cache = cache or DEFAULT_CACHE  # kept by `down`: wheelhouse and host image
        self.key = workdir / "client" / "id_ed25519"
        self.yaml = workdir / "four_node.yaml"
        self.logs = workdir / "logs"

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def ip(self, name: str) -> str:
        if name == "client":
            return f"{self.subnet}.100"
        return f"{self.subnet}.{self.hosts.index(name) + 1}"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.254"

    def dir(self, name: str) -> Path:
        return self.workdir / name


def load_state(lay: Layout) -> dict[str, Any]:
    if lay.state_file.exists():
        return json.loads(lay.state_file.read_text())
    return {}


def save_state(lay: Layout, state: dict[str, Any]) -> None:
    lay.workdir.mkdir(parents=True, exist_ok=True)
    tmp = lay.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(lay.state_file)


def record(lay: Layout, state: dict[str, Any], kind: str, value: Any) -> None:
    """Note something about to be made, before making it, so `down` removes it after any failure."""
    state.setdefault(kind, [])
    if value not in state[kind]:
        state[kind].append(value)
    save_state(lay, state)


# ----------------------------------------------------------------------------------------------
# check


def check_reason() -> str | None:
    """None when this machine can run the harness, else why not."""
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "needs root (network, mount and PID namespaces, sshd)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing commands: {', '.join(missing)} (apt-get install iproute2 openssh-client rsync util-linux)"
    if not os.access(SSHD, os.X_OK):
        return f"no {SSHD} (apt-get install openssh-server)"
    r = subprocess.run(["/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "python3", "-c",
                        "import sys, ensurepip; assert sys.version_info >= (3, 11)"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return ("the hosts' python3 (first on /usr/local/bin:/usr/bin) is missing, older than "
                "3.11 or lacks venv/ensurepip (apt-get install python3-venv)")
    if not (VENV / "bin" / "ray").exists():
        return f"no `ray` in {VENV}: install the project first (README, Install)"
    probe = f"dflprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = subprocess.run(
            ["ip", "netns", "exec", probe, "unshare", "--mount", "--uts", "--pid", "--fork",
             "--mount-proc", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs tmpfs /mnt && ip link add p0 type veth peer name p1 && "
             "ip link add b0 type bridge"],
            capture_output=True, text=True)
        if r.returncode != 0:
            return f"namespaces, tmpfs mounts, veth or bridge not allowed: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def cmd_check(args: argparse.Namespace) -> int:
    reason = check_reason()
    if reason:
        print(f"unavailable: {reason}")
        return 3
    print("ok: this machine can run the four-host harness")
    return 0


# ----------------------------------------------------------------------------------------------
# wheelhouse: the driver venv's versions of everything `pip install -e .` needs


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_pins(python: Path) -> list[tuple[str, str]]:
    """(name, version) of the dependency closure of this checkout's pyproject.toml, as installed
    in `python`'s environment. The checkout, not the installed dfl-ray's metadata, says what is
    needed: an editable install keeps the requirements of the day it was made."""
    code = r'''
import importlib.metadata as md, json, re, sys, tomllib
from packaging.requirements import Requirement
from packaging.markers import default_environment
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
dists = {norm(d.metadata["Name"]): d for d in md.distributions()}
with open(sys.argv[1], "rb") as f:
    top = tomllib.load(f)["project"]["dependencies"]
missing = sorted({norm(Requirement(t).name) for t in top} - set(dists))
if missing:
    sys.exit(f"pyproject.toml needs {missing}, not installed in {sys.executable}: "
             "run pip install -e . in that environment")
need, stack = {}, [("dfl-ray", frozenset())]
while stack:
    name, extras = stack.pop()
    if name in need and extras <= need[name]:
        continue
    need[name] = need.get(name, set()) | set(extras)
    for text in (top if name == "dfl-ray" else dists[name].requires or []):
        req = Requirement(text)
        for e in [""] + sorted(need[name]):
            env = dict(default_environment(), extra=e)
            if req.marker is None or req.marker.evaluate(env):
                stack.append((norm(req.name), frozenset(req.extras)))
                break
need.pop("dfl-ray")
for extra in ("pip", "setuptools", "wheel"):
    if extra in dists:
        need[extra] = set()
print(json.dumps(sorted((n, dists[n].version) for n in need)))
'''
    r = sh([str(python), "-c", code, str(REPO / "pyproject.toml")], check=False,
           capture_output=True)
    if r.returncode:
        raise RuntimeError(f"reading dfl_ray's dependencies failed: {r.stderr.strip()}")
    return [tuple(x) for x in json.loads(r.stdout)]


def local_mirrors() -> tuple[list[Path], list[Path]]:
    """file:// simple indexes and find-links folders of this machine's pip configuration."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True).stdout
    out += "\n" + "\n".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith("PIP_"))
    indexes, links = [], []
    for m in re.finditer(r"file://(/[^\s'\"]+)", out):
        p = Path(m.group(1))
        if p.is_dir() and p not in indexes:
            indexes.append(p)
    for m in re.finditer(r"find[-_]links'?\s*=\s*'?([^'\n]+)", out, re.IGNORECASE):
        for item in m.group(1).split():
            p = Path(item.replace("file://", ""))
            if p.is_dir() and p not in links:
                links.append(p)
    return indexes, links


def _compatible(filename: str) -> bool:
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except Exception:
        return False
    supported = set(sys_tags())
    return any(t in supported for t in tags)


def build_wheelhouse(lay: Layout, python: Path) -> Path:
    """A folder of wheels for dfl_ray's pinned dependency closure; cached by the pin list."""
    pins = dependency_pins(python)
    digest = hashlib.sha256(json.dumps(pins).encode()).hexdigest()[:12]
    house = lay.cache / f"wheelhouse-{digest}"
    if (house / ".complete").exists():
        return house
    log(f"building the wheelhouse {house} ({len(pins)} packages)")
    house.mkdir(parents=True, exist_ok=True)
    indexes, links = local_mirrors()
    missing = []
    for name, version in pins:
        if any(_norm(f.name).startswith(_norm(f"{name}-{version}-")) for f in house.glob("*.whl")):
            continue
        found = None
        for idx in indexes:
            page = idx / _norm(name) / "index.html"
            if page.exists():
                for href in re.findall(r'href="([^"#]+)', page.read_text()):
                    fn = href.rsplit("/", 1)[-1]
                    if fn.endswith(".whl") and _norm(fn).startswith(_norm(f"{name}-{version}-")) \
                            and _compatible(fn) and (page.parent / href).resolve().exists():
                        found = (page.parent / href).resolve()
                        break
            if found:
                break
        if not found:
            for folder in links:
                for f in folder.glob("*.whl"):
                    if _norm(f.name).startswith(_norm(f"{name}-{version}-")) and _compatible(f.name):
                        found = f
                        break
        if found:
            with contextlib.suppress(FileExistsError):
                (house / found.name).symlink_to(found)
        else:
            missing.append(f"{name}=={version}")
    if missing:
        log(f"pip download (from the index this machine's pip uses): {' '.join(missing)}")
        r = subprocess.run([str(python), "-m", "pip", "download", "--no-deps", "--only-binary",
                            ":all:", "-q", "-d", str(house), *missing], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pip download failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    (house / ".complete").write_text(json.dumps(pins))
    return house


# ----------------------------------------------------------------------------------------------
# up


def host_files(lay: Layout, name: str, house: Path) -> None:
    """Home, /tmp and sshd files of one host, made from scratch."""
    d = lay.dir(name)
    for sub in ("home", "tmp", "sshd"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(d / "tmp", 0o1777)
    home = d / "home"
    os.chmod(home, 0o700)
    for src, dst in (("/usr/share/base-files/dot.bashrc", ".bashrc"),
                     ("/usr/share/base-files/dot.profile", ".profile"),
                     ("/etc/skel/.bashrc", ".bashrc"), ("/etc/skel/.profile", ".profile")):
        if Path(src).exists() and not (home / dst).exists():
            shutil.copy(src, home / dst)
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(f"{lay.key}.pub", ssh / "authorized_keys")
    os.chmod(ssh / "authorized_keys", 0o600)
    pip_conf = home / ".config" / "pip"
    pip_conf.mkdir(parents=True, exist_ok=True)
    (pip_conf / "pip.conf").write_text(
        "# this host's package mirror: the wheelhouse of cluster/local_hosts.py (no network here)\n"
        f"[global]\nno-index = true\nfind-links = {house}\ndisable-pip-version-check = true\n")
    hostkey = d / "sshd" / "ssh_host_ed25519_key"
    if not hostkey.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}", "-f", str(hostkey)])
    (d / "sshd" / "sshd_config").write_text(f"""\
ListenAddress {lay.ip(name)}
Port 22
HostKey {hostkey}
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 200:30:400
MaxSessions 200
AcceptEnv LANG LC_*
SetEnv RAY_USAGE_STATS_ENABLED=0
Subsystem sftp /usr/lib/openssh/sftp-server
""")


def seed_home(lay: Layout, house: Path) -> Path:
    """A home holding ~/dfl_venv with every dependency installed, built once: the host image."""
    pins_digest = house.name.split("-", 1)[1]
    seed = lay.cache / f"seed-{pins_digest}"
    if (seed / ".complete").exists():
        return seed
    log(f"building the host image {seed} (a venv with the dependencies, once)")
    if seed.exists():
        shutil.rmtree(seed)
    seed.mkdir(parents=True)
    reqs = [f"{n}=={v}" for n, v in json.loads((house / ".complete").read_text())
            if n not in ("pip", "setuptools", "wheel")]
    (lay.cache / f"seed-{pins_digest}.txt").write_text("\n".join(reqs) + "\n")
    script = (
        f"mount --bind {seed} {HOST_HOME} && cd && python3 -m venv ~/dfl_venv && "
        f"~/dfl_venv/bin/pip install -q --no-index --find-links {house} --upgrade pip && "
        f"~/dfl_venv/bin/pip install -q --no-index --find-links {house} "
        f"-r {lay.cache}/seed-{pins_digest}.txt"
    )
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": HOST_HOME}
    sh(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script], env=env)
    (seed / ".complete").write_text("ok\n")
    return seed


def start_host(lay: Layout, state: dict[str, Any], name: str, seed: Path | None) -> None:
    d = lay.dir(name)
    if seed is not None:
        for sub in ("upper", "work"):
            (d / sub).mkdir(exist_ok=True)
        # the per-host files (ssh, pip.conf, dot files) go in the upper layer
        home_mount = (f"mount -t overlay overlay -o lowerdir={seed},upperdir={d}/upper,"
                      f"workdir={d}/work {HOST_HOME} && cp -a {d}/home/. {HOST_HOME}/ && "
                      f"chmod 700 {HOST_HOME}")
    else:
        home_mount = f"mount --bind {d}/home {HOST_HOME}"
    script = (
        f"set -e; {home_mount}; mount --bind {d}/tmp /tmp; "
        "mount -t tmpfs -o size=4g,mode=1777 tmpfs /dev/shm; "
        f"hostname {name}; exec {SSHD} -D -e -f {d}/sshd/sshd_config"
    )
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    lay.logs.mkdir(parents=True, exist_ok=True)
    with open(lay.logs / f"sshd-{name}.log", "ab") as out:
        p = subprocess.Popen(
            ["ip", "netns", "exec", lay.ns(name), "unshare", "--mount", "--uts", "--pid", "--fork",
             "--kill-child", "--mount-proc", "--propagation", "private", "/bin/sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    state.setdefault("pids", {})[name] = p.pid
    save_state(lay, state)


def init_pid(lay: Layout, name: str) -> int:
    """PID (in this PID namespace) of a host's PID 1, its sshd."""
    pid = load_state(lay)["pids"][name]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    if not children:
        raise RuntimeError(f"host {name} is not running")
    return int(children[0])


def client_files(lay: Layout) -> None:
    d = lay.dir("client")
    for sub in ("home", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(d / "tmp", 0o1777)
    known = []
    for h in lay.hosts:
        pub = (lay.dir(h) / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{lay.ip(h)} {pub[0]} {pub[1]}")
    (d / "known_hosts").write_text("\n".join(known) + "\n")
    # Your computer knows the machines' host keys (you have logged in to them before).
    (d / "ssh_config").write_text(
        "Host *\n"
        f"    UserKnownHostsFile {d}/known_hosts\n"
        "    StrictHostKeyChecking yes\n"
        "    SendEnv LANG LC_*\n")


def wait_ssh(lay: Layout, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    pending = list(lay.hosts)
    while pending and time.time() < deadline:
        for h in list(pending):
            if in_client(lay, f"ssh -i {lay.key} -o BatchMode=yes -o ConnectTimeout=3 "
                              f"root@{lay.ip(h)} hostname", capture=True).returncode == 0:
                pending.remove(h)
        if pending:
            time.sleep(0.5)
    if pending:
        raise RuntimeError(f"sshd did not answer on {pending}; see {lay.logs}/sshd-*.log")


def fill_placeholders(text: str, lay: Layout) -> str:
    """The user's edits of step 1: every *_HERE placeholder of the YAML and the README."""
    subs = [
        ("/home/SSH_USER_HERE", HOST_HOME),
        ("SSH_USER_HERE", "root"),
        ("SSH_PRIVATE_KEY_PATH_HERE", str(lay.key)),
        ("HEAD_IP_HERE", lay.ip(lay.hosts[0])),
    ]
    subs += [(f"WORKER_{i}_IP_HERE", lay.ip(h)) for i, h in enumerate(lay.hosts[1:], start=1)]
    for old, new in subs:
        text = text.replace(old, new)
    return text


def cmd_up(args: argparse.Namespace) -> int:
    reason = check_reason()
    if reason:
        print(f"unavailable: {reason}", file=sys.stderr)
        return 3
    lay = layout(args)
    if lay.state_file.exists() and load_state(lay).get("namespaces"):
        print(f"{lay.state_file} exists: run `down` first", file=sys.stderr)
        return 2
    state: dict[str, Any] = {"prefix": lay.prefix, "subnet": lay.subnet, "hosts": lay.hosts,
                             "workdir": str(lay.workdir), "started": time.time()}
    save_state(lay, state)
    t0 = time.time()
    try:
        python = VENV / "bin" / "python"
        house = Path(args.wheelhouse) if args.wheelhouse else build_wheelhouse(lay, python)
        state["wheelhouse"] = str(house)
        seed = seed_home(lay, house) if args.venv == "seed" else None
        state["venv"] = args.venv
        state["seed"] = str(seed) if seed else None
        (lay.workdir / "client").mkdir(parents=True, exist_ok=True)
        if not lay.key.exists():
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "local_hosts", "-f",
                str(lay.key)])
        for h in lay.hosts:
            host_files(lay, h, house)
        client_files(lay)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir

        br = lay.bridge_ns
        record(lay, state, "namespaces", br)
        sh(["ip", "netns", "add", br])
        sh(["ip", "-n", br, "link", "set", "lo", "up"])
        sh(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", br, "addr", "add", f"{lay.gateway}/24", "dev", "br0"])
        sh(["ip", "-n", br, "link", "set", "br0", "up"])
        for name in [*lay.hosts, "client"]:
            ns = lay.ns(name)
            record(lay, state, "namespaces", ns)
            sh(["ip", "netns", "add", ns])
            sh(["ip", "-n", br, "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0",
                "netns", ns])
            sh(["ip", "-n", br, "link", "set", f"v{name}", "master", "br0", "up"])
            sh(["ip", "-n", ns, "addr", "add", f"{lay.ip(name)}/24", "dev", "eth0"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            # A default route into the bridge namespace, which routes nowhere: Ray finds its node
            # address by the route to a public address, and nothing leaves this machine.
            sh(["ip", "-n", ns, "route", "add", "default", "via", lay.gateway])
        for h in lay.hosts:
            start_host(lay, state, h, seed)
        wait_ssh(lay)
        yaml_text = fill_placeholders(CLUSTER_YAML.read_text(), lay)
        left = sorted(set(re.findall(r"\b[A-Z0-9_]+_HERE\b", yaml_text)))
        if left:
            raise RuntimeError(f"placeholders left in the YAML: {left}")
        lay.yaml.write_text(yaml_text)
        state["up_seconds"] = time.time() - t0
        save_state(lay, state)
    except BaseException:
        log("up failed: removing what it made")
        do_down(lay, keep_files=True)
        raise
    log(f"up in {time.time() - t0:.1f} s: head {lay.ip(lay.hosts[0])}, workers "
        f"{', '.join(lay.ip(h) for h in lay.hosts[1:])}; YAML {lay.yaml}; key {lay.key}")
    return 0


# ----------------------------------------------------------------------------------------------
# running things in the client ("your computer") and on hosts


def client_env(lay: Layout) -> dict[str, str]:
    d = lay.dir("client")
    env = {
        "HOME": str(d / "home"),
        "PATH": f"{VENV / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "USER": "root",
        "RAY_USAGE_STATS_ENABLED": "0",
        "VIRTUAL_ENV": str(VENV),
        "PYTHONPATH": str(REPO),  # this checkout's dfl_ray, whatever the venv's install points to
    }
    return env


def client_argv(lay: Layout, command: str) -> list[str]:
    d = lay.dir("client")
    # The client gets a private /tmp; a checkout or venv that lives under the real /tmp (a CI
    # clone, say) is bound back in at its own path, or its `ray` and `dfl_ray` would vanish.
    tmp = Path("/tmp")
    under_tmp = sorted({p for p in (REPO, VENV) if p.is_relative_to(tmp)})
    carried = [p for p in under_tmp if not any(p != q and p.is_relative_to(q) for q in under_tmp)]
    outer = shlex.quote(f"{d}/outer_tmp")
    keep = "".join(
        f" && mkdir -p {shlex.quote(str(p))} && mount --bind "
        f"{shlex.quote(f'{d}/outer_tmp/{p.relative_to(tmp)}')} {shlex.quote(str(p))}"
        for p in carried)
    hold = f"mkdir -p {outer} && mount --bind /tmp {outer} && " if carried else ""
    prep = (f"{hold}mount --bind {d}/tmp /tmp{keep} && "
            f"mount --bind {d}/ssh_config /etc/ssh/ssh_config && "
            'exec bash -c "$0"')
    return ["ip", "netns", "exec", lay.ns("client"), "unshare", "--mount", "--propagation",
            "private", "/bin/sh", "-c", prep, command]


def in_client(lay: Layout, command: str, capture: bool = False, timeout: float | None = None,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(client_argv(lay, command), cwd=REPO, env=client_env(lay), text=True,
                          capture_output=capture, timeout=timeout, input=stdin)


def on_host(lay: Layout, name: str, command: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    """A root shell inside a host's namespaces (not through SSH): for faults and diagnostics."""
    pid = init_pid(lay, name)
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "-u", "-n", "-p", "--", "/bin/bash", "-c", command],
        text=True, capture_output=capture,
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": HOST_HOME})


def cmd_exec(args: argparse.Namespace) -> int:
    lay = layout(args)
    command = " ".join(args.command)
    if args.where == "client":
        return in_client(lay, command).returncode
    r = on_host(lay, args.where, command, capture=False)
    return r.returncode


# ----------------------------------------------------------------------------------------------
# run: the README against the hosts


def readme_steps(lay: Layout, name: str, job_args: str, data_dir: Path) -> dict[str, str]:
    """cluster/README.md's shell blocks, placeholders filled in as a user would, by role."""
    text = CLUSTER_README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    blocks = [textwrap_dedent(b) for b in blocks]
    roles = {
        "token": "ray get-auth-token",
        "up": "ray up ",
        "wait": "ray exec ",
        "data": "ray rsync-up",
        "dashboard": "ray dashboard",
        "submit": "ray job submit",
        "collect": "ray rsync-down",
        "down": "ray down ",
    }
    steps: dict[str, str] = {}
    for role, needle in roles.items():
        found = [b for b in blocks if needle in b]
        if not found:
            inline = re.findall(r"`(" + re.escape(needle) + r"[^`]*)`", text)
            found = inline[:1]
        if not found:
            raise RuntimeError(f"cluster/README.md has no `{needle.strip()}` step")
        steps[role] = found[0]
    out = {}
    default_data = str((REPO / ".." / "shared" / "data").resolve())
    for role, block in steps.items():
        block = block.replace("cluster/four_node.yaml", str(lay.yaml))
        block = block.replace(README_NAME, name)
        if str(data_dir.resolve()) != default_data:
            block = block.replace("../shared/data/", f"{data_dir.resolve()}/")
        block = fill_placeholders(block, lay)
        left = sorted(set(re.findall(r"\b[A-Z0-9_]+_HERE\b", block)))
        if left:
            raise RuntimeError(f"placeholders left in the README's {role} step: {left}")
        if role == "submit":
            block = block.rstrip("\n") + " " + job_args + "\n"
        out[role] = block
    return out


def textwrap_dedent(block: str) -> str:
    import textwrap

    return textwrap.dedent(block)


class Step:
    """Runs one README step in the client, logs and times it."""

    def __init__(self, lay: Layout, result: dict[str, Any], logfile: Path) -> None:
        self.lay, self.result, self.logfile = lay, result, logfile

    def __call__(self, role: str, command: str, stdin: str | None = None, timeout: float = 900,
                 check: bool = True, stream: bool = False) -> str:
        log(f"step {role}:\n{command.rstrip()}")
        t = time.time()
        with open(self.logfile, "a") as f:
            f.write(f"\n===== {role} {time.strftime('%H:%M:%S')}\n$ {command}\n")
        p = subprocess.Popen(client_argv(self.lay, command), cwd=REPO, env=client_env(self.lay),
                             text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        chunks: list[str] = []

        def pump() -> None:
            assert p.stdout is not None
            with open(self.logfile, "a") as f:
                for line in p.stdout:
                    chunks.append(line)
                    if role == "token":  # the token itself stays out of the log
                        line = re.sub(r"[A-Za-z0-9_\-]{24,}", "<token>", line)
                    f.write(line)
                    f.flush()
                    if stream:
                        sys.stdout.write("    " + line)

        th = threading.Thread(target=pump, daemon=True)
        th.start()
        assert p.stdin is not None
        if stdin:
            p.stdin.write(stdin)
        p.stdin.close()
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            th.join(5)
            raise RuntimeError(f"step {role} timed out after {timeout} s; log {self.logfile}") from e
        except BaseException:  # Ctrl-C or SIGTERM: stop the step before the cleanup runs
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            with contextlib.suppress(Exception):
                p.wait(10)
            raise
        th.join(5)
        dt = time.time() - t
        self.result.setdefault("seconds", {})[role] = round(dt, 1)
        log(f"step {role}: exit {rc} in {dt:.1f} s")
        if check and rc != 0:
            tail = "".join(chunks[-30:])
            raise RuntimeError(f"step {role} failed (exit {rc}); log {self.logfile}\n{tail}")
        return "".join(chunks)


def wait_port(lay: Layout, port: int, timeout: float) -> bool:
    probe = (f"python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(2); "
             f"sys.exit(s.connect_ex((\"127.0.0.1\", {port})))'")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if in_client(lay, probe, capture=True).returncode == 0:
            return True
        time.sleep(1)
    return False


def ray_nodes(lay: Layout) -> list[dict[str, Any]]:
    """Alive Ray nodes, seen from the head (through SSH, like `ray exec`)."""
    code = ("import json, ray; ray.init(address='auto', logging_level='ERROR'); "
            "print('NODES=' + json.dumps([{'id': n['NodeID'], 'ip': n['NodeManagerAddress'], "
            "'alive': n['Alive'], 'cpus': n['Resources'].get('CPU', 0)} for n in ray.nodes()]))")
    r = in_client(lay, f"ssh -i {lay.key} root@{lay.ip(lay.hosts[0])} "
                       f"{shlex.quote('bash -lic ' + shlex.quote('python -c ' + shlex.quote(code)))}",
                  capture=True, timeout=120)
    m = re.search(r"NODES=(\[.*\])", r.stdout)
    if not m:
        raise RuntimeError(f"could not list Ray nodes: {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return [n for n in json.loads(m.group(1)) if n["alive"]]


def per_round_seconds(metrics_csv: Path) -> tuple[float | None, float | None]:
    """(seconds to the end of round 1, mean seconds per round after it) from metrics.csv."""
    walls: dict[int, float] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            if row["wall_seconds"]:
                walls[int(row["step"])] = float(row["wall_seconds"])
    if not walls:
        return None, None
    steps = sorted(walls)
    first = walls[steps[0]]
    if len(steps) < 2:
        return first, None
    return first, (walls[steps[-1]] - walls[steps[0]]) / (steps[-1] - steps[0])


def verify_chains(lay: Layout, run_local: Path, result: dict[str, Any]) -> list[str]:
    """Check summary.json's placement and every node's chain; a list of problems (empty: fine)."""
    problems = []
    summary = json.loads((run_local / "summary.json").read_text())
    placement = summary.get("placement", {})
    result["placement"] = placement
    result["summary"] = {k: summary.get(k) for k in
                         ("status", "error", "nodes", "rounds", "rounds_completed", "wall_seconds",
                          "honest_accuracy_final", "chain_heights", "ledger_time_share")}
    if summary.get("status", "ok") != "ok":
        problems.append(f"the job's summary.json says status {summary.get('status')!r}: "
                        f"{summary.get('error')}")
    # A node whose host is down at the end has no placement entry (its Ray node may be gone).
    down = set((summary.get("faults") or {}).get("down_at_end") or [])
    n_nodes = int(summary.get("nodes") or len(placement))
    distinct = sorted({json.dumps(v, sort_keys=True) for v in placement.values()})
    result["distinct_ray_nodes"] = len(distinct)
    if len(distinct) != len(placement):
        problems.append(f"placement puts two DFL nodes on one Ray node: {placement}")
    if not down and len(distinct) != len(lay.hosts):
        problems.append(f"placement spans {len(distinct)} Ray nodes, not {len(lay.hosts)}: {placement}")
    if len(placement) != n_nodes - len(down):
        problems.append(f"placement has {len(placement)} entries for {n_nodes} nodes, "
                        f"{len(down)} down at the end")
    chains = {}
    for node in [str(i) for i in range(n_nodes)]:  # every node's chain, down ones too
        d = run_local / "chains" / f"node_{node}"
        if not d.is_dir():
            problems.append(f"node {node}: no chain collected at {d}")
            continue
        v = in_client(lay, f"dfl-ray ledger verify {shlex.quote(str(d))}", capture=True)
        m = re.search(r"\bblocks=(\d+)", v.stdout)
        blocks = int(m.group(1)) if m else None
        chains[node] = {"verify_exit": v.returncode, "verify": (v.stdout + v.stderr).strip()[-300:],
                        "blocks": blocks}
        if v.returncode != 0:
            problems.append(f"node {node}: ledger verify failed: {(v.stdout + v.stderr)[-500:]}")
        if blocks is None or blocks < 1:
            problems.append(f"node {node}: chain has no block ({v.stdout.strip()})")
    result["chains"] = chains
    return problems


def chains_on_hosts(lay: Layout, run_remote: str) -> dict[str, list[str]]:
    """Which node_* chain folders each host holds under the run folder."""
    held = {}
    for h in lay.hosts:
        r = in_client(lay, f"ssh -i {lay.key} root@{lay.ip(h)} 'ls {run_remote}/chains 2>/dev/null'",
                      capture=True)
        held[lay.ip(h)] = sorted(r.stdout.split())
    return held


def cmd_run(args: argparse.Namespace) -> int:
    lay = layout(args)
    state = load_state(lay)
    if not state.get("namespaces") or not lay.yaml.exists():
        print("no hosts: run `up` first", file=sys.stderr)
        return 2
    name = args.name or f"local_hosts_{time.strftime('%Y%m%d_%H%M%S')}"
    data_dir = Path(args.data_dir)
    if args.job_args is None:
        args.job_args = FAULT_JOB_ARGS if args.faults else DEFAULT_JOB_ARGS
    steps = readme_steps(lay, name, args.job_args, data_dir)
    lay.logs.mkdir(parents=True, exist_ok=True)
    logfile = lay.logs / f"run-{name}.log"
    result: dict[str, Any] = {"name": name, "job_args": args.job_args, "log": str(logfile),
                              "ok": False, "problems": []}
    result_file = lay.workdir / f"result-{name}.json"
    step = Step(lay, result, logfile)
    dashboard: subprocess.Popen[str] | None = None
    plan: FaultPlan | None = None
    cluster_started = False
    run_local = REPO / "runs" / name
    try:
        step("token", steps["token"])
        t_up = time.time()
        result.setdefault("events", {})["ray_up_start"] = t_up
        cluster_started = True
        step("up", steps["up"], timeout=args.up_timeout)
        step("wait", steps["wait"], timeout=args.up_timeout)
        nodes = ray_nodes(lay)
        result["ray_nodes"] = nodes
        result["events"]["nodes_alive"] = time.time()
        if len(nodes) != len(lay.hosts):
            result["problems"].append(f"{len(nodes)} Ray nodes alive, not {len(lay.hosts)}: {nodes}")
        step("data", steps["data"])
        log(f"step dashboard (kept running):\n{steps['dashboard'].rstrip()}")
        dash_log = lay.logs / f"dashboard-{name}.log"
        with open(dash_log, "a") as out:
            dashboard = subprocess.Popen(client_argv(lay, steps["dashboard"]), cwd=REPO,
                                         env=client_env(lay), text=True,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_port(lay, 8265, 60):
            raise RuntimeError(f"`ray dashboard` did not forward port 8265; see {dash_log}")
        t_submit = time.time()
        result["events"]["submit"] = t_submit
        if args.faults:
            plan = FaultPlan(lay, name, args, t_submit)
            plan.start()
        try:
            step("submit", steps["submit"], timeout=args.job_timeout, stream=args.verbose)
        finally:
            if plan is not None:
                result["faults_injected"] = plan.finish()
        step("collect", steps["collect"], timeout=600)
        result["chains_on_hosts"] = chains_on_hosts(lay, f"{HOST_HOME}/dfl_runs/{name}")
        problems = verify_chains(lay, run_local, result)
        result["problems"] += problems
        # every node's chain was written on the host whose Ray node ran it, and only there
        if plan is not None:  # a node that Ray restarted there has a new Ray node id
            result["ray_nodes_after_job"] = ray_nodes(lay)
        node_ip = {n["id"]: n["ip"] for n in [*nodes, *result.get("ray_nodes_after_job", [])]}
        for node in result.get("chains", {}):
            holders = [h for h, held in result["chains_on_hosts"].items() if f"node_{node}" in held]
            where = result.get("placement", {}).get(node)
            if where is None:  # down at the end: no placement entry, its chain on one host
                if len(holders) != 1:
                    result["problems"].append(f"node {node} (down at the end): chain found on "
                                              f"{holders}, not on one host")
                continue
            ip = node_ip.get(str(where))
            if ip is None or holders != [ip]:
                result["problems"].append(
                    f"node {node}: ran on Ray node {where} ({ip}), chain found on {holders}")
        if plan is not None:
            result["problems"] += check_faults(lay, result, run_local)
        first, per_round = per_round_seconds(run_local / "metrics.csv")
        result["job_first_round_s"] = first
        result["seconds_per_round"] = per_round
        # the hosts share this machine's clock: the TensorBoard event of round 1 is comparable
        t_round1 = first_round_time(run_local)
        if t_round1 is not None:
            result["events"]["first_round_end"] = t_round1
            result["up_to_first_round_s"] = round(t_round1 - t_up, 1)
            result["submit_to_first_round_s"] = round(t_round1 - t_submit, 1)
        result["ok"] = not result["problems"]
    except BaseException as e:
        result["problems"].append(f"{type(e).__name__}: {e}")
        result["diagnostics"] = save_diagnostics(lay)
        raise
    finally:
        if dashboard is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(dashboard.pid, signal.SIGTERM)
            with contextlib.suppress(Exception):
                dashboard.wait(10)
        if cluster_started and not args.keep_cluster:
            try:
                step("down", steps["down"], timeout=300)
                time.sleep(2)
                left = {h: on_host(lay, h, "ps -eo comm= | grep -E '^(raylet|gcs_server|ray::)|python'"
                                   ).stdout.split() for h in lay.hosts}
                result["processes_after_down"] = left
                if any(left.values()):
                    result["problems"].append(f"Ray processes left after the README's stop: {left}")
            except Exception as e:  # noqa: BLE001
                result["problems"].append(f"ray down: {e}")
            result["ok"] = result["ok"] and not result["problems"]
        if args.baseline and result.get("ok"):
            result["baseline"] = baseline(lay, name, args.job_args, data_dir, logfile)
        result_file.write_text(json.dumps(result, indent=1, default=str))
        log(f"result: {result_file}")
    print(json.dumps({k: result.get(k) for k in
                      ("ok", "problems", "distinct_ray_nodes", "seconds", "up_to_first_round_s",
                       "submit_to_first_round_s", "seconds_per_round", "faults_injected",
                       "faults", "baseline")},
                     indent=1, default=str))
    return 0 if result["ok"] else 1


def save_diagnostics(lay: Layout) -> str:
    """Copy the head's autoscaler logs and every host's Ray logs into WORKDIR/logs; a short tail."""
    out = lay.logs / "ray"
    lines = []
    for h in lay.hosts:
        src = lay.dir(h) / "tmp" / "ray" / "session_latest" / "logs"
        if not src.is_dir():
            lines.append(f"{h}: no Ray session")
            continue
        dst = out / h
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*"):
            if f.is_file() and f.name.startswith(("monitor", "raylet", "gcs_server")):
                shutil.copy(f, dst / f.name)
    monitor = out / lay.hosts[0] / "monitor.out"
    if monitor.exists():
        tail = [ln for ln in monitor.read_text(errors="replace").splitlines()
                if re.search(r"fail|error|exception|status", ln, re.I)][-12:]
        lines += ["head monitor.out:", *tail]
    return f"Ray logs in {out}\n" + "\n".join(lines)


def first_round_time(run_local: Path) -> float | None:
    """Wall-clock time (epoch s) at which the job recorded its first evaluated round."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    except ImportError:
        return None
    times = []
    for f in sorted(run_local.glob("events.out.tfevents.*")):
        for e in EventFileLoader(str(f)).Load():
            if e.HasField("summary") and e.step >= 1:
                times.append((e.step, e.wall_time))
    return min(times)[1] if times else None


def baseline(lay: Layout, name: str, job_args: str, data_dir: Path, logfile: Path) -> dict[str, Any]:
    """The same job on one host: a local Ray in the client namespace (the same two CPU cores)."""
    out = lay.dir("client") / "tmp" / "baseline"
    command = (f"python experiments/lenet_noniid.py --placement spread --hosts 1 "
               f"--data-dir {data_dir} --out /tmp/baseline --name {name}_1host {job_args}")
    command = command.replace("--placement spread --hosts 1", "--hosts 4")
    res: dict[str, Any] = {"command": command}
    t = time.time()
    r = in_client(lay, command, capture=True, timeout=900)
    with open(logfile, "a") as f:
        f.write(f"\n===== baseline\n$ {command}\n{r.stdout}{r.stderr}")
    res["exit"] = r.returncode
    res["seconds"] = round(time.time() - t, 1)
    metrics = out / f"{name}_1host" / "metrics.csv"
    if metrics.exists():
        res["job_first_round_s"], res["seconds_per_round"] = per_round_seconds(metrics)
    return res


# ----------------------------------------------------------------------------------------------
# faults


def inject(lay: Layout, kind: str, h: str) -> bool:
    """Cut or restore host `h`'s link (its veth on the bridge), or SIGKILL its raylet; whether
    it did something (a raylet kill finds none when Ray does not run there)."""
    if kind in ("link-down", "link-up"):
        sh(["ip", "-n", lay.bridge_ns, "link", "set", f"v{h}",
            "down" if kind == "link-down" else "up"])
        log(f"{h}: link {kind.split('-')[1]}")
        return True
    if kind == "kill-raylet":
        pids = sh(["ip", "netns", "pids", lay.ns(h)], capture_output=True).stdout.split()
        killed = []
        for pid in pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
        log(f"{h}: killed raylet {killed}")
        return bool(killed)
    raise ValueError(f"unknown fault {kind}")


def cmd_fault(args: argparse.Namespace) -> int:
    return 0 if inject(layout(args), args.kind, args.host) else 1


class FaultPlan(threading.Thread):
    """`run --faults`: while the job runs, cut a worker's link and restore it, then kill another
    worker's raylet, each once the job's metrics.csv (on the head) shows enough rounds."""

    def __init__(self, lay: Layout, name: str, args: argparse.Namespace, t_submit: float) -> None:
        super().__init__(daemon=True, name="fault-plan")
        self.lay, self.name, self.t_submit = lay, name, t_submit
        self.after_rounds = args.fault_after_rounds
        self.gap_rounds = args.fault_gap_rounds
        self.link_down_s = args.link_down_s
        self.link_host, self.kill_host = FAULT_LINK_HOST, FAULT_KILL_HOST
        self.done = threading.Event()  # set when the job's step ends
        self.injected: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.error: str | None = None
        self.link_is_down = False

    def progress(self) -> tuple[int, list[float]]:
        """(rounds the job has logged, wall seconds at each logged round) from its metrics.csv."""
        r = on_host(self.lay, self.lay.hosts[0],
                    f"cat {HOST_HOME}/dfl_runs/{shlex.quote(self.name)}/metrics.csv 2>/dev/null")
        walls: dict[int, float] = {}
        for row in csv.DictReader(r.stdout.splitlines()):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                walls[int(row["step"])] = float(row["wall_seconds"])
        return (max(walls) if walls else 0), [walls[k] for k in sorted(walls)]

    def wait_rounds(self, target: int) -> int | None:
        """The job's round count once it reaches `target`; None if the job ended first."""
        while not self.done.is_set():
            rounds, _ = self.progress()
            if rounds >= target:
                return rounds
            self.done.wait(1.0)
        return None

    def note(self, kind: str, host: str, rounds: int, **extra: Any) -> None:
        now = time.time()
        self.injected.append({"kind": kind, "host": host, "ip": self.lay.ip(host),
                              "after_round": rounds, "at": round(now, 3),
                              "since_submit_s": round(now - self.t_submit, 1), **extra})

    def cut_seconds(self, walls: list[float]) -> float:
        """How long the link stays down: longer than the driver's round deadline (4 x the median
        round, at least 10 s), shorter than Ray's node-death detection."""
        if self.link_down_s > 0:
            return self.link_down_s
        gaps = sorted(walls[i + 1] - walls[i] for i in range(1, len(walls) - 1))  # after round 1
        median = gaps[len(gaps) // 2] if gaps else 5.0
        want = max(LINK_DOWN_MIN_S, 4 * median + 6)
        if want > LINK_DOWN_MAX_S:
            self.notes.append(f"rounds take {median:.1f} s: a cut of {LINK_DOWN_MAX_S:.0f} s may "
                              "end before the driver's round deadline")
        return min(want, LINK_DOWN_MAX_S)

    def run(self) -> None:
        try:
            rounds = self.wait_rounds(self.after_rounds)
            if rounds is None:
                return
            cut = self.cut_seconds(self.progress()[1])
            inject(self.lay, "link-down", self.link_host)
            self.link_is_down = True
            self.note("link-down", self.link_host, rounds, planned_s=round(cut, 1))
            self.done.wait(cut)
            inject(self.lay, "link-up", self.link_host)
            self.link_is_down = False
            rounds = self.progress()[0]
            self.note("link-up", self.link_host, rounds)
            rounds = self.wait_rounds(rounds + self.gap_rounds)
            if rounds is None:
                return
            killed = inject(self.lay, "kill-raylet", self.kill_host)
            self.note("kill-raylet", self.kill_host, rounds, killed=killed)
        except Exception as e:  # noqa: BLE001 - reported in the result
            self.error = f"{type(e).__name__}: {e}"

    def finish(self) -> dict[str, Any]:
        """Stop waiting (the job ended), restore a cut link, and say what was done."""
        self.done.set()
        self.join(60)
        if self.link_is_down:
            with contextlib.suppress(Exception):
                inject(self.lay, "link-up", self.link_host)
                self.link_is_down = False
                self.notes.append("the job ended while the link was down; restored it")
        return {"link_host": self.link_host, "kill_host": self.kill_host,
                "after_rounds": self.after_rounds, "gap_rounds": self.gap_rounds,
                "events": self.injected, "notes": self.notes, "error": self.error}


def check_faults(lay: Layout, result: dict[str, Any], run_local: Path) -> list[str]:
    """What the job's summary.json says about the injected faults (into result["faults"]), and
    the problems: a fault not injected, a job not ok, a cut host that did not go down and come
    back, a killed host not down, Ray declaring the cut host dead."""
    problems: list[str] = []
    plan = result.get("faults_injected") or {}
    kinds = [e["kind"] for e in plan.get("events", []) if e.get("killed", True)]
    if plan.get("error"):
        problems.append(f"fault injection failed: {plan['error']}")
    if kinds != ["link-down", "link-up", "kill-raylet"]:
        problems.append(f"faults injected: {kinds}, not link-down, link-up, kill-raylet (did "
                        "the job end first? give it more rounds)")
    summary = json.loads((run_local / "summary.json").read_text())
    faults = summary.get("faults") or {}
    result["faults"] = {
        "status": summary.get("status"),
        **{k: faults.get(k) for k in ("down", "restarted", "back", "down_at_end",
                                      "dropped_to_down_nodes", "round_timeout_s", "events",
                                      "rounds")},
    }
    on_ip = {ip: sorted(int(c.split("_")[1]) for c in held)
             for ip, held in result.get("chains_on_hosts", {}).items()}
    cut_nodes = on_ip.get(lay.ip(plan.get("link_host", FAULT_LINK_HOST)), [])
    killed_nodes = on_ip.get(lay.ip(plan.get("kill_host", FAULT_KILL_HOST)), [])
    result["faults"]["link_cut_nodes"] = cut_nodes
    result["faults"]["raylet_killed_nodes"] = killed_nodes
    events = faults.get("events") or []

    def first(kind: str, nodes: list[int], after: int = -1) -> dict[str, Any] | None:
        for i, e in enumerate(events):
            if i > after and e.get("kind") == kind and sorted(e.get("nodes", [])) == nodes:
                return {**e, "index": i}
        return None

    down_at_end = sorted(faults.get("down_at_end") or [])
    before = {n["ip"]: n["id"] for n in result.get("ray_nodes", [])}
    after = {n["ip"]: n["id"] for n in result.get("ray_nodes_after_job", [])}
    result["faults"]["ray_alive_after_job"] = sorted(after)
    cut_ip, kill_ip = lay.ip(FAULT_LINK_HOST), lay.ip(FAULT_KILL_HOST)
    if after.get(cut_ip) != before.get(cut_ip):
        problems.append(f"Ray declared {FAULT_LINK_HOST} ({cut_ip}) dead after its link was cut "
                        f"(Ray node {before.get(cut_ip)} before, {after.get(cut_ip)} after): the "
                        "cut outlasted Ray's health checks")
    went = first("down", cut_nodes)
    if not cut_nodes or went is None:
        problems.append(f"no 'down' event for node(s) {cut_nodes} of {FAULT_LINK_HOST}, whose "
                        f"link was cut: {events}")
    elif first("back", cut_nodes, went["index"]) is None:
        problems.append(f"node(s) {cut_nodes} of {FAULT_LINK_HOST} went down (link cut) and "
                        f"never came back: {events}")
    if set(cut_nodes) & set(down_at_end):
        problems.append(f"node(s) {cut_nodes} of {FAULT_LINK_HOST} still down at the end")
    # The raylet kill ends the host actor's process. The head's autoscaler (min_workers: 3)
    # then starts Ray on that worker again, as a new Ray node; the STRICT_SPREAD bundle moves
    # there and Ray restarts the host actor, which resumes its node from the chain on that disk.
    # Whether that happens before the run ends depends on timing: either outcome is fine, a
    # node neither down at the end nor restarted is not.
    died = first("down", killed_nodes)
    restarted = died and first("restarted", killed_nodes, died["index"])
    back = restarted and first("back", killed_nodes, restarted["index"])
    if not killed_nodes or died is None:
        outcome = "never down"
        problems.append(f"no 'down' event for node(s) {killed_nodes} of {FAULT_KILL_HOST}, "
                        f"whose raylet was killed: {events}")
    elif set(killed_nodes) <= set(down_at_end):
        outcome = "down at the end"
    elif back:
        outcome = (f"restarted on {FAULT_KILL_HOST} (Ray node {after.get(kill_ip)}, was "
                   f"{before.get(kill_ip)}) and back in round {back.get('round')}")
    else:
        outcome = "up at the end without a restart"
        problems.append(f"node(s) {killed_nodes} of {FAULT_KILL_HOST} (raylet killed): neither "
                        f"down at the end nor restarted and back: {events}")
    result["faults"]["raylet_killed_outcome"] = outcome
    return problems


# ----------------------------------------------------------------------------------------------
# down


def ns_pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def do_down(lay: Layout, keep_files: bool = False) -> None:
    state = load_state(lay)
    names = list(state.get("namespaces", []))
    # namespaces of this prefix that a lost state file no longer lists
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith(f"{lay.prefix}-") and ns not in names:
            names.append(ns)
    for pid in state.get("pids", {}).values():  # hosts' unshare (sshd and all below die)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    for attempt in range(20):
        alive = [p for ns in names for p in ns_pids(ns)]
        if not alive:
            break
        sig = signal.SIGTERM if attempt < 5 else signal.SIGKILL
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        time.sleep(0.5)
    for ns in reversed(names):
        if subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode == 0:
            log(f"deleted namespace {ns}")
    state["namespaces"] = [ns for ns in names if ns in
                           subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.split()]
    state["pids"] = {}
    if lay.workdir.exists():
        save_state(lay, state)
    if state["namespaces"]:
        raise RuntimeError(f"could not delete namespaces {state['namespaces']}")
    if not keep_files and lay.workdir.exists():
        shutil.rmtree(lay.workdir, ignore_errors=True)
        log(f"removed {lay.workdir}")


def cmd_down(args: argparse.Namespace) -> int:
    lay = layout(args)
    do_down(lay, keep_files=args.keep_files)
    if args.purge_cache and lay.cache.exists():
        shutil.rmtree(lay.cache, ignore_errors=True)
        log(f"removed {lay.cache}")
    return 0


# ----------------------------------------------------------------------------------------------


def layout(args: argparse.Namespace) -> Layout:
    return Layout(Path(args.workdir), args.prefix, args.subnet, cache=Path(args.cache_dir))


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workdir", default=str(DEFAULT_WORKDIR),
                        help="folder for the state file, key, generated YAML, host homes and logs "
                             f"(default {DEFAULT_WORKDIR}; outside /tmp, which each host has private)")
    common.add_argument("--cache-dir", default=str(DEFAULT_CACHE),
                        help="the wheelhouse and the seed host image, kept across runs "
                             f"(default {DEFAULT_CACHE}; outside /tmp)")
    common.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help=f"name prefix of the namespaces (default {DEFAULT_PREFIX})")
    common.add_argument("--subnet", default=DEFAULT_SUBNET,
                        help=f"first three octets of the private /24 (default {DEFAULT_SUBNET}): "
                             "head .1, workers .2-.4, client .100, bridge .254")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("check", parents=[common], help="say whether this machine can run it")
    s.set_defaults(fn=cmd_check)
    s = sub.add_parser("up", parents=[common], help="make the four hosts and the client")
    s.add_argument("--venv", choices=("install", "seed"), default="install",
                   help="install: hosts start with an empty home and `ray up` installs every "
                        "dependency; seed: hosts start from an image whose ~/dfl_venv holds them "
                        "(built once), so `ray up` installs only the project (default install)")
    s.add_argument("--wheelhouse", default=None,
                   help="use this folder of wheels instead of building one from .venv")
    s.set_defaults(fn=cmd_up)
    s = sub.add_parser("run", parents=[common],
                       help="run cluster/README.md steps 2-8 against the hosts and check the result")
    s.add_argument("--name", default=None, help="run name (default local_hosts_<time>)")
    s.add_argument("--job-args", default=None,
                   help=f"appended to the README's job command (default: {DEFAULT_JOB_ARGS!r}; "
                        f"with --faults {FAULT_JOB_ARGS!r})")
    s.add_argument("--data-dir", default=str((REPO / ".." / "shared" / "data").resolve()),
                   help="offline MNIST folder copied to the head (default ../shared/data)")
    s.add_argument("--up-timeout", type=float, default=1800,
                   help="seconds allowed for `ray up` and for the workers to join (default 1800)")
    s.add_argument("--job-timeout", type=float, default=900,
                   help="seconds allowed for the job (default 900)")
    s.add_argument("--keep-cluster", action="store_true", help="skip `ray down` at the end")
    s.add_argument("--baseline", action="store_true",
                   help="also run the same job on one host (local Ray in the client) for s/round")
    s.add_argument("--verbose", action="store_true", help="echo the job's output")
    s.add_argument("--faults", action="store_true",
                   help=f"faults across hosts while the job runs: once the job's metrics.csv on "
                        f"the head shows --fault-after-rounds rounds, cut {FAULT_LINK_HOST}'s link "
                        f"for --link-down-s seconds and restore it; --fault-gap-rounds rounds "
                        f"later, kill {FAULT_KILL_HOST}'s raylet. The job must still exit 0 with "
                        f"status ok; summary.json must record {FAULT_LINK_HOST}'s node going down "
                        f"and coming back and {FAULT_KILL_HOST}'s node down at the end; every "
                        "chain (the killed host's too) is collected and verified. What was "
                        "injected and when, and the summary's faults, go into the result JSON")
    s.add_argument("--fault-after-rounds", type=int, default=3,
                   help="rounds the job completes before the link cut (default 3: the driver's "
                        "round deadline is 4 x the median round once two rounds are timed)")
    s.add_argument("--fault-gap-rounds", type=int, default=3,
                   help="rounds between the link's restore and the raylet kill (default 3)")
    s.add_argument("--link-down-s", type=float, default=0.0,
                   help=f"seconds the link stays cut; 0 (default): 4 x the job's median round + "
                        f"6 s, at least {LINK_DOWN_MIN_S:.0f} s (past the round deadline), at most "
                        f"{LINK_DOWN_MAX_S:.0f} s (Ray's GCS takes about a minute of failed health "
                        "checks to declare a silent node dead)")
    s.set_defaults(fn=cmd_run)
    s = sub.add_parser("exec", parents=[common],
                       help="run a command in the client or inside a host's namespaces")
    s.add_argument("where", help="client, h0 (head), h1, h2 or h3")
    s.add_argument("command", nargs=argparse.REMAINDER, help="the command")
    s.set_defaults(fn=cmd_exec)
    s = sub.add_parser("fault", parents=[common], help="cut or restore a host's link, kill its raylet")
    s.add_argument("kind", choices=("link-down", "link-up", "kill-raylet"), help="the fault")
    s.add_argument("host", help="h0 (head), h1, h2 or h3")
    s.set_defaults(fn=cmd_fault)
    s = sub.add_parser("down", parents=[common],
                       help="remove every namespace, interface, process and file `up` made")
    s.add_argument("--keep-files", action="store_true", help="keep WORKDIR (logs, homes)")
    s.add_argument("--purge-cache", action="store_true",
                   help="also remove the cached wheelhouse and host image")
    s.set_defaults(fn=cmd_down)
    args = p.parse_args(argv)

    def stop(signum: int, _frame: Any) -> None:  # SIGTERM/SIGHUP clean up like Ctrl-C
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
