"""Write SeaweedFS's S3 identities and gRPC TLS into CONFIG_DIR; run by the SeaweedFS pod's init container.

- ``s3.json`` (the ``-s3.config`` file): one identity per entry of IDENTITIES (JSON list of
  ``{"name": ..., "actions": [...]}``), its key pair read from ``S3_<NAME>_ACCESS_KEY_ID`` and
  ``S3_<NAME>_SECRET_ACCESS_KEY`` (NAME upper-cased; the pod fills them from each identity's Secret).
- ``security.toml`` + ``s3-grpc.crt``/``s3-grpc.key``: weed binds the S3 gateway's gRPC port (S3 port + 10000)
  on the same address as the S3 port, and that gRPC service changes identities without credentials. With these
  files (weed reads ``security.toml`` from its working directory) the port requires a client certificate
  signed by a throwaway self-signed certificate whose key never leaves the pod's memory-backed volume, so no
  client can connect to it.

Nothing is kept between pod starts: every start writes fresh files from the Secrets.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

SECURITY_TOML = """# Written by seaweedfs_config.py: the S3 gateway's gRPC port requires a client certificate that nobody has.
[grpc]
ca = "{crt}"

[grpc.s3]
cert = "{crt}"
key = "{key}"
"""


def identities(spec: list[dict], environ: dict[str, str]) -> dict:
    """The ``-s3.config`` document for ``spec``, keys taken from ``environ``; names every missing variable."""
    out, missing = [], []
    for entry in spec:
        prefix = f"S3_{entry['name'].upper()}_"
        key_id, secret = environ.get(prefix + "ACCESS_KEY_ID"), environ.get(prefix + "SECRET_ACCESS_KEY")
        missing += [
            prefix + s for s, v in (("ACCESS_KEY_ID", key_id), ("SECRET_ACCESS_KEY", secret)) if not v
        ]
        out.append(
            {
                "name": entry["name"],
                "credentials": [{"accessKey": key_id, "secretKey": secret}],
                "actions": list(entry["actions"]),
            }
        )
    if missing:
        raise ValueError(
            f"missing S3 identity keys: {', '.join(missing)} (is each identity's Secret present?)"
        )
    keys = [i["credentials"][0]["accessKey"] for i in out]
    if len(set(keys)) != len(keys):
        raise ValueError("two S3 identities share an access key id: give each identity its own Secret")
    return {"identities": out}


def write_grpc_tls(folder: Path) -> None:
    """A self-signed certificate and its key, and security.toml requiring client certificates it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seaweedfs-s3-grpc")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt_path, key_path = folder / "s3-grpc.crt", folder / "s3-grpc.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    (folder / "security.toml").write_text(SECURITY_TOML.format(crt=crt_path, key=key_path))


def main() -> int:
    """Entry point of the init container."""
    try:
        spec = json.loads(os.environ["IDENTITIES"])
        folder = Path(os.environ["CONFIG_DIR"])
        config = identities(spec, dict(os.environ))
    except (KeyError, json.JSONDecodeError, ValueError) as exc:
        print(f"error: {exc} (IDENTITIES is JSON, CONFIG_DIR a folder)", file=sys.stderr)
        return 2
    target = folder / "s3.json"
    target.write_text(json.dumps(config, indent=2))
    target.chmod(0o600)
    write_grpc_tls(folder)
    print(f"S3 identities: {', '.join(i['name'] for i in config['identities'])}; gRPC port needs mTLS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
