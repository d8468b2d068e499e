"""zk0 train without a federation: certificates, option validation, SuperLink probing,
the strategy's bounded node wait."""

import socket
import ssl
import threading

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.engine.certs import check_private_key, check_public_key, make_certificates
from zk0cli.engine.deploy_options import ConnectionOptions
from zk0cli.errors import SuperLinkConnectionError, UsageError


def _flower_children():
    me = psutil.Process()
    return [p for p in me.children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE and "flower" in " ".join(p.cmdline())]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs") / "tls",
                             hosts=["coordinator.example.org", "192.0.2.7"], nodes=2)


def test_certificates_chain_names_and_key_formats(certs):
    ca = x509.load_pem_x509_certificate(certs.tls.ca_cert.read_bytes())
    srv = x509.load_pem_x509_certificate(certs.tls.server_cert.read_bytes())
    srv.verify_directly_issued_by(ca)
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"coordinator.example.org", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"192.0.2.7",
                                                                           "127.0.0.1"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # node keys: what flower-supernode / flwr supernode register load
    key = serialization.load_ssh_private_key(certs.nodes[0].private_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    pub = serialization.load_ssh_public_key(certs.nodes[0].public_key.read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()
    check_public_key(certs.nodes[1].public_key)
    check_private_key(certs.nodes[1].private_key)
    assert certs.nodes[0].private_key.stat().st_mode & 0o077 == 0
    assert certs.tls.server_key.stat().st_mode & 0o077 == 0


def test_certificates_never_overwrite(certs):
    before = certs.tls.ca_cert.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        make_certificates(certs.tls.ca_cert.parent, hosts=["x"])
    assert certs.tls.ca_cert.read_bytes() == before


def test_public_key_check_rejects_a_certificate(certs):
    with pytest.raises(UsageError, match="not an OpenSSH public key"):
        check_public_key(certs.tls.ca_cert)


def test_certs_command(tmp_path):
    res = CliRunner().invoke(app, ["train", "certs", "--out", str(tmp_path / "c"),
                                   "--host", "robot-hub.local", "--nodes", "2"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["ca.crt", "ca.key", "node-1.key", "node-1.pub", "node-2.key",
                     "node-2.pub", "server.key", "server.pem"]


def test_missing_certificate_exits_2_before_any_process(tmp_path):
    before = {p.pid for p in _flower_children()}
    runner = CliRunner()
    missing = tmp_path / "nowhere" / "ca.crt"
    res = runner.invoke(app, ["train", "--superlink", "127.0.0.1:9092", "--root-certificates",
                              str(missing), "--preset", "tiny", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert str(missing) in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train", "--local-nodes", "2", "--tls-dir",
                              str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and str(missing) in res.output
    res = runner.invoke(app, ["train", "superlink", "--tls-dir", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and str(missing) in res.output
    res = runner.invoke(app, ["train", "supernode", "--superlink", "127.0.0.1:9092",
                              "--dataset", "a/b", "--root-certificates", str(missing)])
    assert res.exit_code == 2 and str(missing) in res.output
    assert not (tmp_path / "run").exists()
    assert {p.pid for p in _flower_children()} == before


def test_auth_without_tls_is_refused_with_the_reason(tmp_path):
    runner = CliRunner()
    for args in (["train", "superlink", "--insecure", "--auth"],
                 ["train", "--local-nodes", "2", "--insecure", "--auth"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "authentication needs TLS" in res.output and "--auth" in res.output
    key = tmp_path / "k"
    make_certificates(tmp_path / "c", hosts=[], nodes=1)
    key = tmp_path / "c" / "node-1.key"
    res = runner.invoke(app, ["train", "supernode", "--superlink", "127.0.0.1:9092",
                              "--dataset", "a/b", "--insecure", "--auth-key", str(key)])
    assert res.exit_code == 2 and "authentication needs TLS" in res.output


def test_tls_is_the_default(tmp_path):
    res = CliRunner().invoke(app, ["train", "superlink"])
    assert res.exit_code == 2 and "--insecure" in res.output and "--tls-dir" in res.output
    res = CliRunner().invoke(app, ["train", "--superlink", "127.0.0.1:9092"])
    assert res.exit_code == 2 and "--root-certificates" in res.output


@pytest.mark.parametrize("addr", ["nohost", "host:0", "host:70000", "bad host:1"])
def test_bad_superlink_address(addr):
    res = CliRunner().invoke(app, ["train", "--superlink", addr, "--insecure"])
    assert res.exit_code == 2 and "--superlink" in res.output


def test_unreachable_superlink_is_a_clear_error(tmp_path, so101_root):
    from train_fixtures import write_train_config

    from zk0cli.engine.flwr_proc import free_port

    port = free_port()
    cfg = write_train_config(tmp_path, [so101_root, so101_root])
    res = CliRunner().invoke(app, ["train", "--superlink", f"127.0.0.1:{port}", "--insecure",
                                   "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert f"127.0.0.1:{port}" in res.output and "firewall" in res.output
    assert not (tmp_path / "run").exists()


class _TlsServer:
    """A TLS (or plain) TCP server on loopback that accepts and closes connections."""

    def __init__(self, certs, *, tls: bool):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls:
            self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ctx.load_cert_chain(certs.tls.server_cert, certs.tls.server_key)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.ctx is not None:
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                else:
                    conn.recv(100)
                    conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\n")
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    def close(self):
        self.sock.close()


def test_probe_tls_mismatch_and_bad_ca(certs, tmp_path):
    from zk0cli.engine.deploy import probe_superlink

    tls = _TlsServer(certs, tls=True)
    plain = _TlsServer(certs, tls=False)
    other = make_certificates(tmp_path / "other", hosts=[])
    try:
        probe_superlink(ConnectionOptions(superlink=f"127.0.0.1:{tls.port}",
                                          root_certificates=certs.tls.ca_cert))
        probe_superlink(ConnectionOptions(superlink=f"127.0.0.1:{plain.port}", insecure=True))
        with pytest.raises(SuperLinkConnectionError, match="probably uses TLS"):
            probe_superlink(ConnectionOptions(superlink=f"127.0.0.1:{tls.port}", insecure=True))
        with pytest.raises(SuperLinkConnectionError, match="does not verify") as info:
            probe_superlink(ConnectionOptions(superlink=f"127.0.0.1:{tls.port}",
                                              root_certificates=other.tls.ca_cert))
        assert f"127.0.0.1:{tls.port}" in str(info.value)
        with pytest.raises(SuperLinkConnectionError, match="without TLS"):
            probe_superlink(ConnectionOptions(superlink=f"127.0.0.1:{plain.port}",
                                              root_certificates=certs.tls.ca_cert))
    finally:
        tls.close()
        plain.close()


# --- the strategy's bounded node wait ---------------------------------------------------------


class _Grid:
    """The part of Flower's Grid that configure_train uses: the connected node ids."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return list(self.node_ids)


@pytest.fixture(scope="module")
def strategy_args(make_bundle):
    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.transport import specs_of, to_array_record

    state = get_trainable_state(make_bundle(seed=0).policy)
    return specs_of(state), to_array_record(state)


def _strategy(specs, **kw):
    from zk0cli.core.strategy import Zk0FedProx

    return Zk0FedProx(expected=specs, proximal_mu=0.1, lr_for_round=lambda r: 1e-3, steps=2,
                      min_train_nodes=2, min_available_nodes=2, **kw)


def test_round_with_too_few_nodes_is_recorded_empty_after_the_timeout(strategy_args):
    import time

    from flwr.app import ConfigRecord

    specs, arrays = strategy_args
    strategy = _strategy(specs, node_wait_timeout_s=0.3)
    t0 = time.monotonic()
    msgs = strategy.configure_train(3, arrays, ConfigRecord(), _Grid([11]))
    assert list(msgs) == []
    assert 0.3 <= time.monotonic() - t0 < 2.0
    new, metrics = strategy.aggregate_train(3, [])
    assert new is None and metrics is None
    outcome = strategy.outcomes[3]
    assert not outcome.aggregated
    assert outcome.note.startswith("waiting for 2 nodes, 1 connected after 0.3 s")


def test_enough_nodes_are_sampled_without_waiting(strategy_args, monkeypatch):
    import time

    from flwr.app import ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what the ServerApp process sets
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)

    from zk0cli import constants as K

    specs, arrays = strategy_args
    strategy = _strategy(specs, node_wait_timeout_s=30)
    t0 = time.monotonic()
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), _Grid([11, 12, 13])))
    assert time.monotonic() - t0 < 1.0
    assert sorted(m.metadata.dst_node_id for m in msgs) == [11, 12, 13]
    conf = msgs[0].content[K.CONFIG_KEY]
    assert conf[K.PROXIMAL_MU_KEY] == pytest.approx(0.1) and conf[K.STEPS_KEY] == 2


def test_node_wait_timeout_is_a_config_field():
    from zk0cli.core.config import load_config

    assert load_config(preset="tiny").federation.node_wait_timeout_s == 600.0
    cfg = load_config(preset="tiny", overrides=["federation.node_wait_timeout_s=5"])
    assert cfg.federation.node_wait_timeout_s == 5.0


def test_throwaway_ca_key_is_never_written(tmp_path):
    from zk0cli.engine.certs import CA_KEY

    bundle = make_certificates(tmp_path / "trial", hosts=[], keep_ca_key=False)
    assert bundle.tls.ca_cert.is_file() and bundle.tls.server_key.is_file()
    assert not (tmp_path / "trial" / CA_KEY).exists()
