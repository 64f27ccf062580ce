"""The systemd unit of the agent, as text: `edgefleet agent install-service` writes it with
this machine's paths, and systemd/edgefleet-agent.service is it with the defaults (a test
keeps the two equal, so that the copy in the repository is what gets installed).

Why each setting is there, and what `systemd-analyze security` makes of it:
docs/operations.md ("The systemd unit").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

DEFAULT_USER = "edgefleet"
DEFAULT_CONFIG = "/etc/edgefleet/agent.toml"
DEFAULT_EXEC = ("/opt/edgefleet/venv/bin/edgefleet", "agent", "run", "--config", DEFAULT_CONFIG)
DEFAULT_STATE_DIR = "/var/lib/edgefleet"
UNIT_NAME = "edgefleet-agent.service"
# the agent's exit status for a config it cannot use (cli/agent.py): restarting cannot fix it
EXIT_CONFIG = 78
# ProtectHome= and PrivateTmp= hide these from the service: nothing it needs may live there
HIDDEN = {"/home": "ProtectHome=", "/root": "ProtectHome=", "/run/user": "ProtectHome=",
          "/tmp": "PrivateTmp=", "/var/tmp": "PrivateTmp="}

_TEMPLATE = """\
# systemd unit of the edgefleet agent. `edgefleet agent install-service` writes it with this
# machine's paths; this copy holds the defaults. Each setting: docs/operations.md.
[Unit]
Description=edgefleet agent: receives models over MQTT, runs and reports them
Wants=network-online.target
After=network-online.target
# a crash loop hides its cause: after 5 failed starts in 10 minutes systemd stops trying
StartLimitIntervalSec=10min
StartLimitBurst=5

[Service]
# READY=1 once serving, STATUS= on changes, WATCHDOG=1 from the main loop (agent/sd_notify.py)
Type=notify
NotifyAccess=main
WatchdogSec=30s
# restore loads and self-tests the stored model before READY
TimeoutStartSec=2min
TimeoutStopSec=20s
ExecStart={exec_start}
Restart=on-failure
RestartSec=5s
RestartPreventExitStatus={exit_config}
# a watchdog kill (SIGABRT) leaves every thread's traceback in the journal
Environment=PYTHONFAULTHANDLER=1
User={user}
{directories}
UMask=0027

# devices: the standard pseudo devices and the accelerators, nothing else
DevicePolicy=closed
# Coral M.2 / PCIe Edge TPU, /dev/apex_N (udev gives it to group apex)
DeviceAllow=char-apex rw
# Coral USB Accelerator, through libusb (Coral's udev rule gives it to group plugdev)
DeviceAllow=char-usb_device rw
# NXP i.MX 8M Plus NPU (VeriSilicon VX delegate), /dev/galcore
DeviceAllow=char-galcore rw
# Raspberry Pi firmware, for vcgencmd's power and throttling figures (group video)
DeviceAllow=char-vchiq rw
DeviceAllow=char-vcio rw

# file system: read-only but for the directories above
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
PrivateMounts=true
ProtectProc=invisible
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectKernelLogs=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true

# privileges: none to start with, none to gain
NoNewPrivileges=true
CapabilityBoundingSet=
RestrictSUIDSGID=true
RemoveIPC=true
LockPersonality=true
RestrictRealtime=true
RestrictNamespaces=true
MemoryDenyWriteExecute=true
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
# AF_NETLINK: libusb watches USB hot-plug through it, and the Coral USB re-enumerates when
# its firmware loads; without it libusb_init() fails and the Edge TPU is never found
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
"""


def exec_quote(arg: str) -> str:
    """One ExecStart= argument: systemd expands % specifiers and $ variables, and splits
    on white space unless quoted."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uses_state_directory(state_dir: str | Path) -> bool:
    """Under /var/lib, StateDirectory= creates state_dir and hands it to the user."""
    state = PurePosixPath(state_dir)
    return state.is_relative_to("/var/lib") and state != PurePosixPath("/var/lib")


def directories(state_dir: str | Path = DEFAULT_STATE_DIR, socket: str | Path | None = None) -> list[str]:
    """The lines that make the agent's writable places writable under ProtectSystem=strict:
    StateDirectory= for a state_dir under /var/lib (systemd creates it and gives it to the
    user), ReadWritePaths= for one elsewhere; the same for a unix socket's folder."""
    state = PurePosixPath(state_dir)
    lines = []
    if uses_state_directory(state):
        lines += [f"StateDirectory={state.relative_to('/var/lib')}", "StateDirectoryMode=0750"]
    else:
        lines.append(f"ReadWritePaths={state}")
    lines.append("RuntimeDirectory=edgefleet")  # /run/edgefleet, for a unix: socket of the local API
    if socket is not None:
        folder = PurePosixPath(socket).parent
        if not folder.is_relative_to("/run/edgefleet") and not folder.is_relative_to(state):
            lines.append(f"ReadWritePaths=-{folder}")
    return lines


def render_unit(exec_start: Sequence[str] = DEFAULT_EXEC, user: str = DEFAULT_USER,
                state_dir: str | Path = DEFAULT_STATE_DIR, socket: str | Path | None = None) -> str:
    return _TEMPLATE.format(exec_start=" ".join(exec_quote(a) for a in exec_start), user=user,
                            exit_config=EXIT_CONFIG, directories="\n".join(directories(state_dir, socket)))


def hidden_by_sandbox(path: str | Path) -> str | None:
    """The setting that hides PATH from the service, or None when the service can see it."""
    p = PurePosixPath(Path(path).absolute())
    return next((setting for top, setting in HIDDEN.items() if p.is_relative_to(top)), None)
