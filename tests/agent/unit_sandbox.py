"""Run a command under the seccomp filters that systemd/edgefleet-agent.service asks systemd
for: SystemCallFilter= (an allow list, other calls fail with EPERM), MemoryDenyWriteExecute=
and RestrictAddressFamilies=, plus NoNewPrivileges=. No service manager runs the tests, so
this stands in for the part of the unit that a library could trip over (a JIT, an
executable stack, an unusual system call, a socket family).

    python tests/agent/unit_sandbox.py UNIT_FILE -- COMMAND ARGS...

The filters are read from the unit file itself; system call groups are expanded with
`systemd-analyze syscall-filter`, so that the sets are the installed systemd's own. The
filters are built as systemd builds them: one per setting, stacked (the kernel applies the
strictest answer). Uses libseccomp through ctypes: nothing to compile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

ALLOW = 0x7FFF0000
CMP_EQ, CMP_GE, CMP_MASKED_EQ = 4, 5, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
PR_SET_NO_NEW_PRIVS = 38
AF_MAX = 64  # above every family Linux defines (46 in 6.x)


def errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Every KEY=VALUE of the [Service] section, in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def syscall_group(name: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a group (`@system-service`), nested groups expanded."""
    seen = set() if seen is None else seen
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                         check=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#") or not line.startswith(" "):
            continue
        if item.startswith("@"):
            if item not in seen:
                seen.add(item)
                calls |= syscall_group(item, seen)
        else:
            calls.add(item)
    return calls


def _expand(words: list[str]) -> set[str]:
    calls: set[str] = set()
    for word in words:
        calls |= syscall_group(word) if word.startswith("@") else {word}
    return calls


def allowed_syscalls(values: list[str]) -> set[str]:
    """SystemCallFilter= lines: the first is an allow list, `~` lines take calls away."""
    allowed: set[str] = set()
    for value in values:
        if value.startswith("~"):
            allowed -= _expand(value[1:].split())
        else:
            allowed |= _expand(value.split())
    # always allowed by systemd (systemd.exec(5)), whatever the filter says
    return allowed | {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn",
                      "clock_gettime", "gettimeofday", "nanosleep", "clock_nanosleep", "time"}


def _rule(lib: ctypes.CDLL, ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return  # not a system call of this architecture
    array = (ArgCmp * max(1, len(cmps)))(*[ArgCmp(*c) for c in cmps])
    rc = lib.seccomp_rule_add_array(ctypes.c_void_p(ctx), action, nr, len(cmps), array)
    if rc < 0:
        raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")


def _load(lib: ctypes.CDLL, ctx: int) -> None:
    rc = lib.seccomp_load(ctypes.c_void_p(ctx))
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def apply(unit: Path) -> None:
    settings = unit_settings(unit)
    lib = _lib()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if settings.get("MemoryDenyWriteExecute", ["false"])[-1] in ("true", "yes", "1"):
        ctx = lib.seccomp_init(ALLOW)
        denied = errno_action(errno.EPERM)
        _rule(lib, ctx, denied, "mmap", (2, CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC))
        _rule(lib, ctx, denied, "mprotect", (2, CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        _rule(lib, ctx, denied, "pkey_mprotect", (2, CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        _rule(lib, ctx, denied, "shmat", (2, CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        _load(lib, ctx)
    if "RestrictAddressFamilies" in settings:
        families = {getattr(socket, name) for name in settings["RestrictAddressFamilies"][-1].split()}
        ctx = lib.seccomp_init(ALLOW)
        refused = errno_action(errno.EAFNOSUPPORT)
        for family in set(range(AF_MAX)) - families:
            _rule(lib, ctx, refused, "socket", (0, CMP_EQ, family, 0))
        _rule(lib, ctx, refused, "socket", (0, CMP_GE, AF_MAX, 0))
        _load(lib, ctx)
    if "SystemCallFilter" in settings:
        code = settings.get("SystemCallErrorNumber", ["EPERM"])[-1]
        ctx = lib.seccomp_init(errno_action(getattr(errno, code)))
        for name in sorted(allowed_syscalls(settings["SystemCallFilter"])):
            _rule(lib, ctx, ALLOW, name)
        _load(lib, ctx)


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        raise SystemExit(__doc__)
    apply(Path(argv[1]))
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv)
