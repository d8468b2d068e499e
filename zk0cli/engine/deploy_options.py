"""Validated options of ``zk0 train`` (pydantic), checked before any process starts.

Every file named by an option must exist (missing certificate → exit 2 naming the file),
TLS is the default and ``--insecure`` must be explicit, and SuperNode authentication
without TLS is refused (Flower signs node requests, but without TLS the SuperLink cannot
be authenticated and the traffic, model weights included, is readable on the wire; the
SuperLink itself refuses ``--enable-supernode-auth`` with ``--insecure``).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from zk0cli.engine.certs import TlsFiles, check_private_key, check_public_key
from zk0cli.errors import DeploymentOptionsError, UsageError, field_problems

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
AUTH_NEEDS_TLS = ("SuperNode authentication needs TLS: without it the SuperLink cannot prove "
                  "who it is and model weights travel readable on the network (Flower refuses "
                  "--enable-supernode-auth with --insecure). Drop --insecure and use "
                  "certificates from `zk0 train certs`.")


def parse_address(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:PORT``) and check both parts.

    Raises:
        ValueError: Not ``HOST:PORT`` with a port in 1–65535.
    """
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT with a port in 1-65535, e.g. 192.0.2.10:9092")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_RE.match(host):
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    return host, int(port)


def _existing_file(value: Path | None, what: str) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise ValueError(f"{what} file {path} does not exist")
    return path


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SuperLinkOptions(_Options):
    """``zk0 train superlink``: where the SuperLink listens and how it is secured."""

    host: str = Field("0.0.0.0", description="--host: address to listen on.")
    port: int = Field(9092, ge=1, le=65535, description="--port: the one port of the SuperLink.")
    tls_dir: Path | None = Field(None, description="--tls-dir: folder from `zk0 train certs`.")
    insecure: bool = Field(False, description="--insecure: plain HTTP (explicit only).")
    auth: bool = Field(False, description="--auth: SuperNode authentication.")
    database: Path | None = Field(None, description="--database: SuperLink state file.")

    @model_validator(mode="after")
    def _check(self) -> SuperLinkOptions:
        if self.insecure and self.tls_dir is not None:
            raise ValueError("--tls-dir: give either --tls-dir or --insecure, not both")
        if not self.insecure and self.tls_dir is None:
            raise ValueError("--tls-dir: TLS is the default: give --tls-dir DIR (from `zk0 "
                             "train certs`), or --insecure to run without TLS on a trusted "
                             "network")
        if self.auth and self.insecure:
            raise ValueError("--auth: " + AUTH_NEEDS_TLS)
        if self.tls_dir is not None:
            for p in TlsFiles.in_dir(self.tls_dir).missing():
                raise ValueError(f"--tls-dir: certificate file {p} does not exist; make it with "
                                 f"`zk0 train certs --out {self.tls_dir} --host NAME`")
        return self

    @property
    def tls(self) -> TlsFiles | None:
        """The certificate files, or ``None`` when insecure."""
        return TlsFiles.in_dir(self.tls_dir) if self.tls_dir is not None else None


class ConnectionOptions(_Options):
    """How this machine reaches a SuperLink: address and TLS trust."""

    superlink: str = Field(..., description="--superlink HOST:PORT")
    root_certificates: Path | None = Field(None, description="--root-certificates ca.crt")
    insecure: bool = Field(False, description="--insecure")

    @field_validator("superlink")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_address(v)
        return v.strip()

    @field_validator("root_certificates")
    @classmethod
    def _ca(cls, v: Path | None) -> Path | None:
        return _existing_file(v, "root certificate")

    @model_validator(mode="after")
    def _tls(self) -> ConnectionOptions:
        if self.insecure and self.root_certificates is not None:
            raise ValueError("--root-certificates: give either --root-certificates or --insecure, "
                             "not both")
        if not self.insecure and self.root_certificates is None:
            raise ValueError("--root-certificates: TLS is the default: give --root-certificates "
                             "ca.crt (the CA of the SuperLink), or --insecure if the SuperLink "
                             "runs without TLS")
        return self


class SuperNodeOptions(ConnectionOptions):
    """``zk0 train supernode``: how a site's SuperNode connects (its data: ``SiteConfig``)."""

    auth_key: Path | None = Field(None, description="--auth-key node-<i>.key")
    port: int | None = Field(None, ge=1, le=65535, description="--port of the node's own API")
    site_file: Path | None = Field(None, description="the site's settings as JSON (written "
                                   "by zk0 in the state folder, read by the ClientApp)")

    @field_validator("site_file")
    @classmethod
    def _site_file(cls, v: Path | None) -> Path | None:
        if v is not None and '"' in str(v):
            raise ValueError("the path must not contain a double quote (Flower node config)")
        return Path(v).absolute() if v is not None else None

    @field_validator("auth_key")
    @classmethod
    def _key(cls, v: Path | None) -> Path | None:
        path = _existing_file(v, "auth key")
        if path is not None:
            try:
                check_private_key(path)
            except UsageError as err:
                raise ValueError(str(err)) from None
        return path

    @model_validator(mode="after")
    def _auth_tls(self) -> SuperNodeOptions:
        if self.auth_key is not None and self.insecure:
            raise ValueError("--auth: " + AUTH_NEEDS_TLS)
        return self


def _public_key(p: Path) -> Path:
    """One ``KEY.pub`` file: it exists and holds a public key."""
    path = _existing_file(p, "public key")
    assert path is not None
    try:
        check_public_key(path)
    except UsageError as err:
        raise ValueError(str(err)) from None
    return path


class RegisterOptions(ConnectionOptions):
    """``zk0 train register``: add node public keys to a SuperLink with auth on."""

    public_keys: list[Annotated[Path, AfterValidator(_public_key)]] = Field(
        ..., min_length=1, description="KEY.pub files")


class LocalTrialOptions(_Options):
    """``zk0 train --local-nodes K``: SuperLink and K SuperNodes on this machine."""

    nodes: int = Field(..., ge=1, le=32, description="--local-nodes")
    tls_dir: Path | None = Field(None, description="--tls-dir (default: a throwaway CA)")
    insecure: bool = Field(False, description="--insecure")
    auth: bool = Field(False, description="--auth")

    @model_validator(mode="after")
    def _check(self) -> LocalTrialOptions:
        if self.insecure and self.tls_dir is not None:
            raise ValueError("--tls-dir: give either --tls-dir or --insecure, not both")
        if self.auth and self.insecure:
            raise ValueError("--auth: " + AUTH_NEEDS_TLS)
        if self.tls_dir is not None:
            for p in TlsFiles.in_dir(self.tls_dir).missing():
                raise ValueError(f"--tls-dir: certificate file {p} does not exist; make it with "
                                 f"`zk0 train certs --out {self.tls_dir} --host localhost`")
        return self


_FLAGS = {"superlink": "--superlink", "root_certificates": "--root-certificates",
          "insecure": "--insecure", "tls_dir": "--tls-dir", "auth": "--auth",
          "dataset": "--dataset", "dataset_root": "--dataset-root", "auth_key": "--auth-key",
          "port": "--port", "host": "--host", "client_id": "--client-id", "nodes": "--local-nodes",
          "public_keys": "KEY.pub", "database": "--database"}


def validate_options[M: BaseModel](model: type[M], **values: Any) -> M:
    """Build an options model; turn every validation problem into one usage error.

    Raises:
        DeploymentOptionsError: Naming each flag, the value seen and what is accepted.
    """
    try:
        return model.model_validate(values)
    except ValidationError as err:
        problems = field_problems(err, data=values, model=model, names=_FLAGS, flags=True)
        raise DeploymentOptionsError(problems, command=_COMMANDS.get(model.__name__, "zk0 train")
                                     ) from None


# The command whose --help lists each options model's flags.
_COMMANDS = {"SuperLinkOptions": "zk0 train superlink", "SuperNodeOptions": "zk0 train supernode",
             "RegisterOptions": "zk0 train register"}
