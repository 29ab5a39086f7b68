"""Certificates and keys for the local control plane, made with the ``openssl`` command.

Why real TLS and client certificates: the operator must meet the same authentication and RBAC
it meets in production (a cluster where everyone is anonymous admin hides RBAC bugs). Why the
``openssl`` CLI: it is on every Debian/Ubuntu machine, so no extra Python dependency is needed.
EC P-256 keys keep generation to milliseconds, which matters for ``up`` in a few seconds.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClientCert", "Pki", "PkiError", "create_pki"]

_DAYS = "3650"


class PkiError(RuntimeError):
    """openssl is missing or failed."""


@dataclass(frozen=True)
class ClientCert:
    """A client identity: Kubernetes takes the user from CN and the groups from O."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()


#: Identities the components use, as kubeadm names them (RBAC's bootstrap roles expect these).
CLIENTS: tuple[ClientCert, ...] = (
    ClientCert("admin", "kubernetes-admin", ("system:masters",)),
    ClientCert("controller-manager", "system:kube-controller-manager"),
    ClientCert("scheduler", "system:kube-scheduler"),
    # kwok plays every kubelet at once (node status, leases, pod status of all nodes): the
    # Node authorizer would confine a single system:node:<name> to one node, so it gets admin.
    ClientCert("kwok", "kwok-controller", ("system:masters",)),
)

#: CN of the certificate the API server presents to aggregated API servers (kubeadm's name).
FRONT_PROXY_CLIENT = "front-proxy-client"

APISERVER_SANS: tuple[str, ...] = (
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files (all PEM)."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.dir / "front-proxy-ca.crt"

    @property
    def front_proxy_ca_key(self) -> Path:
        return self.dir / "front-proxy-ca.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise PkiError(
            "the `openssl` command is missing (apt-get install openssl); it makes the cluster's certificates"
        )
    return path


def _run(args: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run([_openssl(), *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise PkiError(f"openssl {args[0]} failed: {detail[-1] if detail else proc.returncode}")


def _ec_key(path: Path) -> None:
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)])
    path.chmod(0o600)


def _subject(cn: str, orgs: tuple[str, ...] = ()) -> str:
    return "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"


def _self_signed_ca(key: Path, cert: Path, cn: str) -> None:
    _ec_key(key)
    _run(
        [
            "req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={cn}",
            "-days", _DAYS, "-sha256", "-out", str(cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]
    )  # fmt: skip


def _signed_cert(
    directory: Path, name: str, subject: str, extensions: str, tmp: Path, ca: tuple[Path, Path]
) -> None:
    key = directory / f"{name}.key"
    csr = tmp / f"{name}.csr"
    ext = tmp / f"{name}.ext"
    _ec_key(key)
    _run(["req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr)])
    ext.write_text(extensions)
    _run(
        [
            "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-set_serial", str(secrets.randbits(62) + 1),
            "-days", _DAYS, "-sha256", "-extfile", str(ext), "-out", str(directory / f"{name}.crt"),
        ]
    )  # fmt: skip


_CLIENT_EXT = (
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=clientAuth\n"
)


def create_pki(directory: Path, *, extra_sans: tuple[str, ...] = ()) -> Pki:
    """Make the cluster CA, the API server's serving certificate, client certificates, the
    front-proxy (aggregation layer) CA and client, and the service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = Pki(directory)
    cluster_ca = (pki.ca_cert, pki.ca_key)
    _self_signed_ca(pki.ca_key, pki.ca_cert, "phoenix-local-ca")
    # A separate CA for the aggregation layer, as kubeadm does: requests an extension API
    # server receives from the front proxy must not be confusable with ordinary client certs.
    _self_signed_ca(pki.front_proxy_ca_key, pki.front_proxy_ca_cert, "phoenix-local-front-proxy-ca")
    with tempfile.TemporaryDirectory(dir=directory) as tmp_name:
        tmp = Path(tmp_name)
        sans = ",".join((*APISERVER_SANS, *extra_sans))
        _signed_cert(
            directory,
            "apiserver",
            "/CN=kube-apiserver",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
            tmp,
            cluster_ca,
        )
        for client in CLIENTS:
            subject = _subject(client.common_name, client.organizations)
            _signed_cert(directory, client.name, subject, _CLIENT_EXT, tmp, cluster_ca)
        _signed_cert(
            directory,
            FRONT_PROXY_CLIENT,
            f"/CN={FRONT_PROXY_CLIENT}",
            _CLIENT_EXT,
            tmp,
            (pki.front_proxy_ca_cert, pki.front_proxy_ca_key),
        )
    # Service-account token signing key pair (ES256 is accepted by the API server).
    _ec_key(pki.sa_key)
    _run(["pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub)])
    return pki
