"""TLS certificates and SuperNode key pairs for a Flower deployment (``zk0 train certs``).

Made with the ``cryptography`` library, in the formats Flower 1.42 reads:

* a CA (``ca.crt``, ``ca.key``): the coordinator keeps ``ca.key`` private and gives
  ``ca.crt`` to every site (SuperNode ``--root-certificates``, the ``flwr`` connection);
* a SuperLink server certificate (``server.pem``, ``server.key``) signed by the CA, with
  subject alternative names for every host name and IP address the sites and the
  coordinator use to reach it (``localhost`` and ``127.0.0.1`` are always included,
  because the SuperLink's own ServerApp process connects over loopback);
* one key pair per SuperNode for node authentication: ``node-<i>.key`` (OpenSSH private
  key, read by ``flower-supernode --auth-supernode-private-key`` with
  ``load_ssh_private_key``) and ``node-<i>.pub`` (OpenSSH public key, read by
  ``flwr supernode register`` with ``load_ssh_public_key``). Flower accepts NIST EC
  curves only; zk0 uses P-384 (SECP384R1), as Flower's own examples do.

Private keys are written with mode 0600; nothing existing is overwritten.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zk0cli.core.rundir import create_dir
from zk0cli.errors import UsageError
from zk0cli.log import logger

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TlsFiles:
    """The three files a TLS SuperLink needs (absolute paths).

    Attributes:
        ca_cert: CA certificate (PEM); also the sites' ``--root-certificates``.
        server_cert: SuperLink certificate (PEM) signed by the CA.
        server_key: SuperLink private key (PEM, unencrypted).
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        """The file names :func:`make_certificates` writes, inside ``directory``."""
        d = Path(directory).absolute()
        return cls(d / CA_CERT, d / SERVER_CERT, d / SERVER_KEY)

    def missing(self) -> list[Path]:
        """The files that do not exist."""
        return [p for p in (self.ca_cert, self.server_cert, self.server_key) if not p.is_file()]


@dataclass(frozen=True)
class NodeKeys:
    """One SuperNode's authentication key pair.

    Attributes:
        private_key: OpenSSH private key file (``--auth-supernode-private-key``).
        public_key: OpenSSH public key file (``flwr supernode register``).
    """

    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class CertBundle:
    """Everything :func:`make_certificates` wrote.

    Attributes:
        tls: CA and server certificate files.
        nodes: One key pair per SuperNode.
        hosts: The names and addresses the server certificate is valid for.
    """

    tls: TlsFiles
    nodes: list[NodeKeys]
    hosts: list[str]


def node_key_paths(directory: Path, index: int) -> NodeKeys:
    """Paths of node ``index``'s key pair (1-based) inside ``directory``."""
    d = Path(directory).absolute()
    return NodeKeys(d / f"node-{index}.key", d / f"node-{index}.pub")


def _write(path: Path, data: bytes, *, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _san_entries(hosts: Sequence[str]) -> list[object]:
    from cryptography import x509

    entries: list[object] = []
    for h in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            entries.append(x509.DNSName(h))
    return entries


def _check_hosts(hosts: Sequence[str]) -> list[str]:
    out: list[str] = []
    for h in [*hosts, *LOOPBACK_NAMES]:
        h = h.strip()
        if not h or any(c in h for c in " /:@") and not _is_ip(h):
            raise UsageError(f"--host {h!r} is not a host name or IP address; give the name or "
                             "address the sites use to reach the SuperLink, e.g. "
                             "--host coordinator.example.org --host 203.0.113.5.")
        if h not in out:
            out.append(h)
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def make_node_keys(directory: Path, index: int) -> NodeKeys:
    """Write one SuperNode key pair (EC P-384, OpenSSH format) as ``node-<index>.key/.pub``.

    Raises:
        UsageError: A file of the pair already exists.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    keys = node_key_paths(directory, index)
    for p in (keys.private_key, keys.public_key):
        if p.exists():
            raise UsageError(f"{p} already exists; zk0 never overwrites keys. Choose another "
                             "--out directory or remove the old keys yourself.")
    key = ec.generate_private_key(ec.SECP384R1())
    _write(keys.private_key, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()), private=True)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH)
    _write(keys.public_key, pub + f" zk0-node-{index}\n".encode(), private=False)
    return keys


def make_certificates(out: Path, *, hosts: Sequence[str], nodes: int = 0,
                      days: int = 365, keep_ca_key: bool = True) -> CertBundle:
    """Write a CA, a SuperLink server certificate and ``nodes`` SuperNode key pairs.

    Args:
        out: Directory to write into (created; must not already hold these files).
        hosts: Host names and IP addresses the SuperLink is reached at; ``localhost`` and
            ``127.0.0.1`` are added.
        nodes: SuperNode key pairs to make (``node-1`` ... ``node-N``).
        days: Validity of the certificates, in days.
        keep_ca_key: Write ``ca.key`` (needed to sign more certificates later). A
            throwaway CA (the local trial's) passes ``False``: its private key then only
            ever lives in this process's memory, and no hard exit can leave it on disk.

    Returns:
        The paths written.

    Raises:
        UsageError: A host is malformed or a file already exists.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = _check_hosts(hosts)
    out = Path(out).absolute()
    tls = TlsFiles.in_dir(out)
    existing = [p for p in (tls.ca_cert, tls.server_cert, tls.server_key) if p.exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists; zk0 never overwrites certificates. "
                         "Choose another --out directory.")
    create_dir(out, purpose="the certificate folder")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zk0 federation CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    srv_key = ec.generate_private_key(ec.SECP384R1())
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                     key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=True, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(srv_key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    _write(tls.ca_cert, ca_cert.public_bytes(pem), private=False)
    if keep_ca_key:
        _write(out / CA_KEY, ca_key.private_bytes(pem, pkcs8, serialization.NoEncryption()),
               private=True)
    _write(tls.server_cert, srv_cert.public_bytes(pem), private=False)
    _write(tls.server_key, srv_key.private_bytes(pem, pkcs8, serialization.NoEncryption()),
           private=True)
    node_keys = [make_node_keys(out, i) for i in range(1, nodes + 1)]
    if nodes:
        logger.info("wrote CA, server certificate for %s and %d node key pair(s) to %s",
                    ", ".join(names), nodes, out)
    else:
        logger.info("wrote CA and server certificate for %s to %s", ", ".join(names), out)
    return CertBundle(tls, node_keys, names)


def check_public_key(path: Path) -> None:
    """Check that ``path`` is an OpenSSH EC public key on a NIST curve, as Flower requires.

    Raises:
        UsageError: Missing file, or not a NIST EC public key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not Path(path).is_file():
        raise UsageError(f"public key file {path} does not exist; make node keys with "
                         "`zk0 train certs --nodes N` (node-<i>.pub).")
    try:
        key = serialization.load_ssh_public_key(Path(path).read_bytes())
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise UsageError(f"{path} is not an OpenSSH public key ({err}); give the node-<i>.pub "
                         "file from `zk0 train certs`.") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
            "secp256r1", "secp384r1", "secp521r1"):
        raise UsageError(f"{path} is not an EC key on a NIST curve (P-256/P-384/P-521), which "
                         "Flower requires for SuperNode authentication.")


def check_private_key(path: Path) -> None:
    """Check that ``path`` is an unencrypted OpenSSH EC private key, as Flower requires.

    Raises:
        UsageError: Missing file, or not an EC private key in OpenSSH format.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not Path(path).is_file():
        raise UsageError(f"--auth-key file {path} does not exist; make node keys with "
                         "`zk0 train certs --nodes N` (node-<i>.key).")
    try:
        key = serialization.load_ssh_private_key(Path(path).read_bytes(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise UsageError(f"--auth-key {path} is not an unencrypted OpenSSH private key ({err});"
                         " give the node-<i>.key file from `zk0 train certs`.") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"--auth-key {path} is not an EC key; Flower needs a NIST EC key.")
