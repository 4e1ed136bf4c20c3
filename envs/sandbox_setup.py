"""The isolated sandbox's first stage: runs as root, builds a jail with OS mechanisms, then starts the program in it.

``envs.sandbox`` runs this file as a script (``python -I -S -B sandbox_setup.py <json>``) for every call in the
default ``isolated`` mode; it is never imported, and uses only the standard library (``ctypes`` for the system
calls Python 3.11 does not wrap: ``unshare``, ``mount``, ``pivot_root``, ``prctl``). Three processes:

* **S** (this script, the process the worker started): dies with the worker (``PR_SET_PDEATHSIG``), enters new
  mount, network, IPC and UTS namespaces and a new PID namespace for its children (``unshare``), forks A and waits.
* **A** (pid 1 of the new PID namespace, still root): makes every mount private, builds a new root on a small
  tmpfs (read-only binds of ``/usr``, the Python install and four device nodes; the ``/lib`` style symlinks; a
  fresh ``/proc``; the working directory as its own size-limited tmpfs owned by the sandbox user, holding
  ``main.py``), ``pivot_root``\\ s into it and detaches the old root (the host's files are then unreachable, not
  just forbidden), remounts ``/`` read-only, forks B and reaps every process until B ends. When A exits, the kernel
  kills whatever is left in the namespace: no orphan (a forked child, a ``setsid`` daemon) outlives the call.
* **B** drops every capability from its bounding set, clears its supplementary groups, switches to the unprivileged
  uid/gid the worker chose (so ``RLIMIT_NPROC`` binds and the kernel's permission checks apply), sets
  ``PR_SET_NO_NEW_PRIVS``, lowers its rlimits, closes every descriptor but stdin/stdout/stderr, and ``execve``\\ s
  the interpreter with an empty environment but the few variables given, on the program-side bootstrap.

A network namespace has only a loopback interface, down: a connection to anything, the host's own loopback
included, fails with "Network is unreachable". Status goes back to the worker as JSON lines on a pipe it passed
(``status_fd``): ``{"init": <host pid of A>}`` (the worker kills A at the wall-clock limit, which ends the
namespace), ``{"status": <B's wait status>}``, or ``{"error": "<step>: <reason>"}`` when the jail could not be built.
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
LIMITS = {"cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "fsize": resource.RLIMIT_FSIZE,
          "nproc": resource.RLIMIT_NPROC, "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


class SetupError(Exception):
    """A step of building the jail failed; the message names the step and the kernel's reason."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _b(s):
    return None if s is None else os.fsencode(s)


def mount(source, target, fstype, flags, data=None):
    _check(libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def prctl(option, arg):
    _check(libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def report(fd, **message):
    os.write(fd, (json.dumps(message) + "\n").encode())  # one write, < PIPE_BUF: atomic


def build_root(cfg):
    """Mount the new root over the (host) temp dir, fill it, pivot into it; leaves the cwd in the work dir."""
    home, root = cfg["home"], cfg["home"]
    with open(os.path.join(home, "main.py"), "rb") as f:  # hidden once the new root is mounted over home
        program = f.read()
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates back to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=1024,mode=755")
    for path in cfg["ro_binds"]:
        target = root + path
        if os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
        mount(path, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for name, dest in cfg["links"].items():
        os.symlink(dest, root + name)
    os.makedirs(root + "/dev")
    for dev in DEVICES:
        open(root + dev, "w").close()
        mount(dev, root + dev, None, MS_BIND)
        mount(None, root + dev, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC)
    os.makedirs(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this PID namespace's processes only
    work = root + home
    os.makedirs(work)
    mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={cfg['work_bytes']},nr_inodes=4096,mode=700,uid={cfg['uid']},gid={cfg['gid']}")
    main = os.path.join(work, "main.py")
    with open(main, "wb") as f:
        f.write(program)
    os.chown(main, cfg["uid"], cfg["gid"])
    os.chdir(root)
    _check(libc.pivot_root(b".", b"."), "pivot_root")  # the old root now sits on top of the new one ...
    _check(libc.umount2(b".", MNT_DETACH), "umount the old root")  # ... and goes: the host's tree is unreachable
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(home)


def become_program(cfg, status_fd):
    """In B: shed every privilege and descriptor, then exec the interpreter on the program. Never returns."""
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last_cap + 1):
        prctl(PR_CAPBSET_DROP, cap)
    os.setgroups([])
    os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
    os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])  # all uids non-zero: the kernel clears the capability sets
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.umask(0o077)
    os.closerange(3, status_fd)
    os.closerange(status_fd + 1, os.sysconf("SC_OPEN_MAX"))
    os.set_inheritable(status_fd, False)  # closed by the exec, open until then to report an exec failure
    for name, value in cfg["limits"].items():
        hard = value + 1 if name == "cpu" else value  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.setrlimit(LIMITS[name], (value, hard))
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


def init(cfg, status_fd):
    """A: pid 1 of the new PID namespace. Build the jail, start B, reap until B ends, report its status."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # S gone (killed by the worker): A goes, and the namespace with it
    os.umask(0o022)
    build_root(cfg)
    _check(libc.sethostname(b"sandbox", 7), "sethostname")
    pid = os.fork()
    if pid == 0:
        try:
            become_program(cfg, status_fd)
        except BaseException as e:
            report(status_fd, error=f"starting the program: {type(e).__name__}: {e}")
        os._exit(127)
    while True:
        try:
            done, wait_status = os.wait()  # orphans are reparented to A: reap them too
        except ChildProcessError:
            return
        if done == pid:
            report(status_fd, status=wait_status)
            return


def main():
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != cfg["parent_pid"]:  # the worker died before the line above
            os._exit(1)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS),
               "unshare(mount, PID, network, IPC, UTS namespaces)")
        pid = os.fork()
    except BaseException as e:
        report(status_fd, error=str(e) if isinstance(e, SetupError) else f"{type(e).__name__}: {e}")
        os._exit(1)
    if pid == 0:
        try:
            init(cfg, status_fd)
        except BaseException as e:
            report(status_fd, error=str(e) if isinstance(e, SetupError) else f"{type(e).__name__}: {e}")
            os._exit(1)
        os._exit(0)
    report(status_fd, init=pid)
    os._exit(0 if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 else 1)


if __name__ == "__main__":
    main()
