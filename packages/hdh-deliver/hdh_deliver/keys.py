"""Key identifiers, key generation and the hub's two key configurations.

- The *hub key ring* lists the hub's RSA private keys (several during a
  rotation); a file is picked by the ``key_id`` in its header.
- The *provider registry* maps a provider id to its live Ed25519 signing keys.

Both are YAML files whose key material lives in separate files (or PEM text
in environment variables) outside the repository; see ``docs/configuration.md``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

RSA_KEY_SIZES = (3072, 4096)


def key_id(public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    """Lowercase hex SHA-256 of the public key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_pem(public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only, from its first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _private_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, passphrase: bytes | None):
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@dataclass(frozen=True)
class GeneratedKey:
    key_id: str
    private_key_file: Path
    public_key_file: Path


def generate_hub_key(directory: Path, *, bits: int = 4096, passphrase: bytes | None = None) -> GeneratedKey:
    """A new RSA key pair for the hub, named after its key_id (private file 0600)."""
    if bits not in RSA_KEY_SIZES:
        raise ValueError(f"hub keys are RSA {RSA_KEY_SIZES[0]} or {RSA_KEY_SIZES[1]} bits")
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _store_pair(directory, "hub", private, passphrase)


def generate_provider_key(directory: Path, *, passphrase: bytes | None = None) -> GeneratedKey:
    """A new Ed25519 signing key pair for a provider (private file 0600)."""
    return _store_pair(directory, "provider", ed25519.Ed25519PrivateKey.generate(), passphrase)


def _store_pair(directory: Path, role: str, private, passphrase: bytes | None) -> GeneratedKey:
    kid = key_id(private.public_key())
    stem = f"{role}-{kid[:16]}"
    private_file = directory / f"{stem}.key.pem"
    public_file = directory / f"{stem}.pub.pem"
    _write_private(private_file, _private_pem(private, passphrase))
    public_file.write_bytes(public_pem(private.public_key()))
    return GeneratedKey(kid, private_file, public_file)


def read_owner_only(path: Path) -> bytes:
    """A private key file's bytes, refused if its group or others have any access to it.

    The mode is read from the open file (no window between check and read);
    like OpenSSH, a key others could have read is treated as compromised.
    """
    with open(path, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyConfigError(
                f"{path} is accessible to group or others (mode {stat.filemode(mode)}): make it owner-only "
                "(chmod 600) and replace the key, which may have been read."
            )
        return handle.read()


def load_private_key(path: Path, passphrase: bytes | None = None):
    return serialization.load_pem_private_key(read_owner_only(Path(path)), password=passphrase)


def load_public_key(pem: bytes):
    return serialization.load_pem_public_key(pem)


def _passphrase(entry: Mapping) -> bytes | None:
    variable = entry.get("passphrase_env")
    if not variable:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise KeyConfigError(f"environment variable {variable} (a key passphrase) is not set")
    return value.encode()


class KeyConfigError(ValueError):
    """A key ring or provider registry file that cannot be used as configured."""


def _read_yaml(path: Path) -> Mapping:
    # Only the hub reads these YAML files (key ring, provider registry): PyYAML is the hub's dependency,
    # imported here so that a provider's installation needs none.
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise KeyConfigError(f"cannot read {path}: {error.__class__.__name__}") from error
    if not isinstance(document, Mapping):
        raise KeyConfigError(f"{path} must hold a YAML mapping")
    return document


def _resolve(base: Path, file: str) -> Path:
    candidate = Path(os.path.expandvars(file)).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


@dataclass(frozen=True)
class HubKeyRing:
    """The hub's live RSA private keys, by key_id."""

    keys: Mapping[str, rsa.RSAPrivateKey]

    @classmethod
    def from_file(cls, path: Path) -> HubKeyRing:
        """Load ``keys: [{file: ..., passphrase_env: ...}]``; relative files are beside the YAML."""
        document = _read_yaml(path)
        entries = document.get("keys")
        if not isinstance(entries, list) or not entries:
            raise KeyConfigError(f"{path}: 'keys' must be a non-empty list")
        keys: dict[str, rsa.RSAPrivateKey] = {}
        for entry in entries:
            if not isinstance(entry, Mapping) or "file" not in entry:
                raise KeyConfigError(f"{path}: every key needs a 'file'")
            key = load_private_key(_resolve(Path(path).parent, entry["file"]), _passphrase(entry))
            if not isinstance(key, rsa.RSAPrivateKey) or key.key_size not in RSA_KEY_SIZES:
                raise KeyConfigError(f"{path}: {entry['file']} is not an RSA 3072/4096 key")
            keys[key_id(key.public_key())] = key
        return cls(keys)

    def get(self, kid: str) -> rsa.RSAPrivateKey | None:
        return self.keys.get(kid)


@dataclass(frozen=True)
class Provider:
    provider_id: str
    name: str
    signing_keys: Mapping[str, ed25519.Ed25519PublicKey] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderRegistry:
    """Provider id → live Ed25519 signing public keys."""

    providers: Mapping[str, Provider]

    @classmethod
    def from_file(cls, path: Path) -> ProviderRegistry:
        """Load ``providers: {id: {name: ..., signing_keys: [{file: ...} | {pem: ...}]}}``."""
        from hdh_deliver.names import is_provider

        document = _read_yaml(path)
        entries = document.get("providers")
        if not isinstance(entries, Mapping):
            raise KeyConfigError(f"{path}: 'providers' must be a mapping")
        providers = {}
        for provider_id, entry in entries.items():
            if not is_provider(str(provider_id)) or not isinstance(entry, Mapping):
                raise KeyConfigError(f"{path}: provider {provider_id!r} is not a valid entry")
            keys = {}
            for key_entry in entry.get("signing_keys") or []:
                if "pem" in key_entry:
                    pem = str(key_entry["pem"]).encode()
                else:
                    pem = _resolve(Path(path).parent, key_entry["file"]).read_bytes()
                key = load_public_key(pem)
                if not isinstance(key, ed25519.Ed25519PublicKey):
                    raise KeyConfigError(f"{path}: {provider_id} has a signing key that is not Ed25519")
                keys[key_id(key)] = key
            providers[str(provider_id)] = Provider(
                str(provider_id), str(entry.get("name", provider_id)), keys
            )
        return cls(providers)

    def get(self, provider_id: str) -> Provider | None:
        return self.providers.get(provider_id)
