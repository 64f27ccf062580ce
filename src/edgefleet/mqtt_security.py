"""TLS and credentials for MQTT connections, the agent's and the command line's alike.

The TLS context is ours (ssl.create_default_context, handed to paho with tls_set_context),
so that the broker's certificate and name are always checked, and so that a refused
handshake can be explained: paho's reconnection loop swallows the reason.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

PLAIN_PORT, TLS_PORT = 1883, 8883
PROBE_TIMEOUT_S = 5.0


class SecurityError(Exception):
    """A certificate, key or password file cannot be used; the message names it."""


@dataclass(frozen=True)
class MqttSecurity:
    tls: bool = False
    ca_file: str = ""  # "" with TLS: the system's certificate authorities
    cert_file: str = ""  # a client certificate, for brokers that ask for one
    key_file: str = ""  # its private key ("" when cert_file holds both)
    username: str = ""
    password_file: str = ""  # the password on the file's first line
    password: str = ""  # given directly (the CLI's $EDGEFLEET_MQTT_PASSWORD); password_file wins

    @property
    def uses_tls(self) -> bool:
        """A CA or a client certificate means TLS even without tls = true: a forgotten switch must
        not send credentials in clear text."""
        return self.tls or bool(self.ca_file or self.cert_file)

    def default_port(self) -> int:
        return TLS_PORT if self.uses_tls else PLAIN_PORT

    def context(self) -> ssl.SSLContext:
        """The client's TLS context: the broker's certificate must chain to the CA and name the host."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise SecurityError(f"CA file {self.ca_file}: {_reason(exc)} (a PEM file of the CA that "
                                "signed the broker's certificate)") from None
        if self.key_file and not self.cert_file:
            raise SecurityError(f"key file {self.key_file} given without its client certificate (cert_file)")
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise SecurityError(f"client certificate {self.cert_file}"
                                    f"{' with key ' + self.key_file if self.key_file else ''}: "
                                    f"{_reason(exc)} (PEM files; the key must not need a passphrase)"
                                    ) from None
        return context

    def read_password(self) -> str:
        if not self.password_file:
            return self.password
        try:
            lines = Path(self.password_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityError(f"password file {self.password_file}: {_reason(exc)}") from None
        if not lines or not lines[0]:
            raise SecurityError(f"password file {self.password_file} is empty; put the password on its "
                                "first line")
        return lines[0]

    def apply(self, client: mqtt.Client) -> None:
        """Set TLS and the username on a paho client before it connects. Raises SecurityError."""
        if self.password_file and not self.username:
            raise SecurityError("a password without a username: set the username too")
        if self.username:
            client.username_pw_set(self.username, self.read_password() or None)
        if self.uses_tls:
            client.tls_set_context(self.context())

    def diagnose(self, host: str, port: int) -> str | None:
        """Why a TLS connection to HOST:PORT fails, by trying one handshake (None: it worked, or
        TLS is off, or the failure is not TLS's). Blocks up to PROBE_TIMEOUT_S twice."""
        if not self.uses_tls:
            return None
        try:
            with (socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw,
                  self.context().wrap_socket(raw, server_hostname=host)):
                return None
        except ssl.SSLCertVerificationError as exc:
            return tls_failure(host, port, exc)
        except ssl.SSLError as exc:
            return f"TLS handshake with {host}:{port} failed: {_reason(exc)} (does it listen with TLS?)"
        except (OSError, SecurityError):
            return None


def tls_failure(host: str, port: int, exc: ssl.SSLError) -> str:
    """A refused broker certificate as a sentence that says what to check."""
    detail = getattr(exc, "verify_message", "") or _reason(exc)
    hint = (f"the broker's certificate does not name {host!r}: connect with a name it holds"
            if "hostname" in detail.lower() or "ip address mismatch" in detail.lower()
            else "check the CA file: it must be the CA that signed the broker's certificate")
    return f"the broker's certificate at {host}:{port} was refused ({detail}); {hint}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
