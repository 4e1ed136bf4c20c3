"""The program-side sandbox bootstrap: runs inside the sandboxed interpreter, before the model's program.

``envs.sandbox_process`` passes this file's text with ``-c`` (never imported: in the isolated mode the project's
files are not even visible from inside the jail). It lowers the rlimits (CPU seconds, address space, file size,
processes, open files, no core files), then installs a ``sys.addaudithook`` that refuses sockets, starting
processes, signals, ``ctypes``, native modules from outside the Python install, and file access outside the working
directory (reads: also the Python install), and only then runs ``main.py``. Everything the hook needs lives in its
closure (immutable values), not in module globals the program could reach through ``sys.modules``; the frame that
built it is gone by the time the program runs.

Arguments: ``cpu_s memory_bytes file_bytes nofile nproc hook`` (``hook`` 0 leaves the audit hook out: the tests
use it to show that the isolated sandbox's OS layers hold on their own).
"""

import os
import resource
import sys
import traceback


def _guard(cpu_s, memory_b, file_b, nofile, nproc, with_hook):
    limits = ((resource.RLIMIT_CPU, cpu_s, cpu_s + 1), (resource.RLIMIT_AS, memory_b, memory_b),
              (resource.RLIMIT_FSIZE, file_b, file_b), (resource.RLIMIT_NPROC, nproc, nproc),
              (resource.RLIMIT_NOFILE, nofile, nofile), (resource.RLIMIT_CORE, 0, 0))
    for which, soft, hard in limits:
        old_hard = resource.getrlimit(which)[1]
        if old_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))
    if not with_hook:
        return
    for name in ("mknod", "mkfifo", "chroot"):  # they create files or move / without an audit event
        for module in (os, sys.modules["posix"]):
            if hasattr(module, name):
                delattr(module, name)

    real = os.path.realpath
    home = real(os.getcwd())
    install = tuple(sorted({real(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                               os.path.dirname(os.__file__))}))
    readable = (home,) + install
    devices = frozenset({"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # event -> (indexes of path arguments, indexes of dir_fd arguments)
    path_events = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
                   "os.rename": ((0, 1), (2, 3)), "os.utime": ((0,), (3,)), "os.truncate": ((0,), ())}
    denied = {
        "subprocess.Popen": "starting processes", "os.system": "starting processes", "os.exec": "starting processes",
        "os.fork": "starting processes", "os.forkpty": "starting processes", "os.posix_spawn": "starting processes",
        "os.spawn": "starting processes", "pty.spawn": "starting processes", "os.kill": "sending signals",
        "os.killpg": "sending signals", "signal.pthread_kill": "sending signals", "os.chmod": "changing permissions",
        "os.chown": "changing owners", "os.link": "linking files", "os.symlink": "linking files",
        "os.setxattr": "changing file attributes", "os.removexattr": "changing file attributes",
        "resource.setrlimit": "changing the sandbox limits", "resource.prlimit": "changing the sandbox limits",
        "gc.get_objects": "walking the interpreter's objects", "gc.get_referrers": "walking the interpreter's objects",
        "gc.get_referents": "walking the interpreter's objects",
    }
    modules = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "posix", "_xxsubinterpreters", "_testcapi",
                         "_testinternalcapi"})

    def resolve(path):
        try:
            return real(os.fsdecode(os.fspath(path)))
        except Exception:  # not a path (or an unresolvable one): treated as outside everything
            return None

    def inside(path, roots):
        p = resolve(path)
        return p is not None and any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            if (mode is not None and any(c in mode for c in "wax+")) or (flags or 0) & write_flags:
                if not inside(path, (home,)):
                    raise PermissionError(f"writing {path!r} is blocked in this sandbox; write files in the "
                                          "working directory with a relative path such as 'out.txt'")
            elif not inside(path, readable) and resolve(path) not in devices:
                raise PermissionError(f"reading {path!r} is blocked in this sandbox; only the working directory "
                                      "and the Python standard library can be read")
            elif os.path.isdir(path) and not inside(path, (home,)):
                raise PermissionError(f"opening the directory {path!r} is blocked in this sandbox")
        elif event.startswith("socket."):
            raise PermissionError(f"network access ({event}) is blocked in this sandbox; compute the answer "
                                  "with the standard library instead")
        elif event.startswith("ctypes."):
            raise PermissionError(f"ctypes ({event}) is blocked in this sandbox")
        elif event == "import":
            if args[0] in modules or args[0].startswith("ctypes."):
                raise PermissionError(f"importing {args[0]!r} is blocked in this sandbox")
            if isinstance(args[1], str) and not inside(args[1], install):
                raise PermissionError(f"loading the native module {args[1]!r} is blocked in this sandbox")
        elif event in denied:
            raise PermissionError(f"{denied[event]} ({event}) is blocked in this sandbox; do the work in "
                                  "Python itself")
        elif event in path_events:
            paths, dir_fds = path_events[event]
            if any(i < len(args) and args[i] not in (None, -1) for i in dir_fds):
                raise PermissionError(f"{event} with dir_fd is blocked in this sandbox; use a relative path")
            for i in paths:
                if not isinstance(args[i], int) and not inside(args[i], (home,)):
                    raise PermissionError(f"{event} on {args[i]!r} is blocked in this sandbox; only files in "
                                          "the working directory can be changed")
        elif event in ("os.listdir", "os.scandir"):
            path = "." if args[0] is None else args[0]
            if not isinstance(path, int) and not inside(path, readable):
                raise PermissionError(f"listing {path!r} is blocked in this sandbox; only the working directory "
                                      "and the Python standard library can be read")

    sys.addaudithook(hook)


def _run():
    main = type(sys)("__main__")
    main.__file__ = "main.py"
    sys.modules["__main__"], sys.argv = main, ["main.py"]
    sys.stdout.reconfigure(line_buffering=True)  # lines printed before a CPU-limit kill still come back
    try:
        with open("main.py", "rb") as f:
            source = f.read()
        exec(compile(source, "main.py", "exec", dont_inherit=True), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # without this bootstrap's frame
        sys.exit(1)


_guard(*(int(a) for a in sys.argv[1:7]))
del _guard
_run()
