"""Mosquitto set up as docs/operations.md says: docs/mosquitto/edgefleet.conf with its ACL file,
passwords made with mosquitto_passwd and certificates with docs/mosquitto/make-certs.sh. Only
the paths, the port and what a test run needs (a log, no persistence file) are changed."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

from edgefleet.fleet.broker import free_port
from edgefleet.mqtt_security import MqttSecurity
from tests.support import ROOT, Mosquitto

DOCS = ROOT / "docs" / "mosquitto"
MAKE_CERTS = DOCS / "make-certs.sh"


def make_certs(folder: Path, broker_name: str, *clients: str) -> Path:
    subprocess.run(["bash", str(MAKE_CERTS), str(folder), broker_name, *clients], check=True,
                   capture_output=True, text=True)
    return folder


class SecureMosquitto(Mosquitto):
    """Starts, stops and is killed as Mosquitto does; only its configuration is its own (so
    Mosquitto.__init__, which writes the open one, is not called)."""

    def __init__(self, binary: str, folder: Path, users: tuple[str, ...], client_certs: tuple[str, ...] = (),
                 require_certificates: bool = False):
        """USERS get a random password each (password_files); CLIENT_CERTS a certificate each;
        REQUIRE_CERTIFICATES turns on the config's commented client-certificate lines."""
        self.binary, self.folder = binary, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.host, self.port = "127.0.0.1", free_port()
        self.certs = make_certs(folder / "certs", self.host, *client_certs)
        self.password_files: dict[str, Path] = {}
        passwd = folder / "edgefleet.passwd"
        passwd.touch()  # the config names it: empty when only certificates identify clients
        for i, user in enumerate(users):
            secret = folder / f"{user}.password"
            secret.write_text(secrets.token_urlsafe(16) + "\n")
            secret.chmod(0o600)
            self.password_files[user] = secret
            subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user,
                            secret.read_text().strip()], check=True, capture_output=True)
        conf = (DOCS / "edgefleet.conf").read_text()
        replacements = [("/etc/mosquitto/certs/", f"{self.certs}/"),
                        ("/etc/mosquitto/edgefleet.passwd", str(passwd)),
                        ("/etc/mosquitto/edgefleet.acl", str(DOCS / "edgefleet.acl")),
                        ("persistence true", "persistence false")]
        if require_certificates:
            replacements += [("#require_certificate true", "require_certificate true"),
                             ("#use_identity_as_username true", "use_identity_as_username true")]
        for old, new in replacements:
            assert old in conf, f"docs/mosquitto/edgefleet.conf no longer holds {old!r}"
            conf = conf.replace(old, new)
        conf, n = re.subn(r"^listener 8883$", f"listener {self.port} {self.host}", conf, flags=re.M)
        assert n == 1, "docs/mosquitto/edgefleet.conf no longer has 'listener 8883'"
        conf += f"log_dest file {folder / 'mosquitto.log'}\nlog_type all\n"
        if os.geteuid() == 0:  # as root Mosquitto becomes `mosquitto`, which cannot read pytest's folders
            conf += "user root\n"
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def security(self, user: str | None = None, cert: str | None = None,
                 ca: Path | None = None) -> MqttSecurity:
        """How USER (with its password) or the holder of certificate CERT logs in, trusting CA."""
        return MqttSecurity(tls=True, ca_file=str(ca or self.certs / "ca.crt"),
                            cert_file=str(self.certs / f"{cert}.crt") if cert else "",
                            key_file=str(self.certs / f"{cert}.key") if cert else "",
                            username=user or "", password_file=str(self.password_files[user]) if user else "")

    def cli_options(self, security: MqttSecurity) -> list[str]:
        pairs = [("--ca-file", security.ca_file), ("--client-cert", security.cert_file),
                 ("--client-key", security.key_file), ("--username", security.username),
                 ("--password-file", security.password_file)]
        return ["--broker", f"mqtts://{self.address}", *[x for k, v in pairs if v for x in (k, v)]]

    def mqtt_toml(self, security: MqttSecurity) -> str:
        """The agent's [mqtt] lines for SECURITY."""
        keys = ("ca_file", "cert_file", "key_file", "username", "password_file")
        lines = [f'{k} = "{getattr(security, k)}"\n' for k in keys if getattr(security, k)]
        return "tls = true\n" + "".join(lines)
