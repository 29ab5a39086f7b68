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
        raise PkiError("the `openssl` command is missing (apt-get install openssl); it makes the cluster's certificates")
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


def _signed_cert(pki: Pki, name: str, subject: str, extensions: str, tmp: Path) -> None:
    key = pki.dir / f"{name}.key"
    csr = tmp / f"{name}.csr"
    ext = tmp / f"{name}.ext"
    _ec_key(key)
    _run(["req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr)])
    ext.write_text(extensions)
    _run(
        [
            "x509", "-req", "-in", str(csr), "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key),
            "-set_serial", str(secrets.randbits(62) + 1),
            "-days", _DAYS, "-sha256", "-extfile", str(ext), "-out", str(pki.dir / f"{name}.crt"),
        ]
    )  # fmt: skip


def create_pki(directory: Path, *, extra_sans: tuple[str, ...] = ()) -> Pki:
    """Make a CA, the API server's serving certificate, client certificates and SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = Pki(directory)
    _ec_key(pki.ca_key)
    _run(
        [
            "req", "-x509", "-new", "-key", str(pki.ca_key), "-subj", "/CN=phoenix-local-ca",
            "-days", _DAYS, "-sha256", "-out", str(pki.ca_cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]
    )  # fmt: skip
    with tempfile.TemporaryDirectory(dir=directory) as tmp_name:
        tmp = Path(tmp_name)
        sans = ",".join((*APISERVER_SANS, *extra_sans))
        _signed_cert(
            pki,
            "apiserver",
            "/CN=kube-apiserver",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
            tmp,
        )
        for client in CLIENTS:
            _signed_cert(
                pki,
                client.name,
                _subject(client.common_name, client.organizations),
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=clientAuth\n",
                tmp,
            )
    # Service-account token signing key pair (ES256 is accepted by the API server).
    _ec_key(pki.sa_key)
    _run(["pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub)])
    return pki
