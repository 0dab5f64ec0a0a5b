"""Command-line tools: ``hdh-keys`` creates key pairs, ``hdh-deliver`` prepares and uploads a delivery."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hdh_deliver.envelope import DEFAULT_SEGMENT_SIZE
from hdh_deliver.keys import (
    generate_hub_key,
    generate_provider_key,
    load_private_key,
    load_public_key,
)
from hdh_deliver.provider import SourceFile, prepare_delivery, upload_delivery
from hdh_deliver.transfer import SftpSettings, SftpUnavailable, sftp_session


def _passphrase(variable: str | None) -> bytes | None:
    if not variable:
        return None
    if variable not in os.environ:
        raise SystemExit(f"environment variable {variable} is not set")
    return os.environ[variable].encode()


def keys_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hdh-keys", description="Create a hub encryption key pair or a provider signing key pair."
    )
    parser.add_argument("role", choices=["hub", "provider"])
    parser.add_argument("--out", type=Path, required=True, help="folder for the two PEM files")
    parser.add_argument("--bits", type=int, default=4096, choices=[3072, 4096], help="hub RSA key size")
    parser.add_argument("--passphrase-env", help="encrypt the private key with this variable's value")
    args = parser.parse_args(argv)
    passphrase = _passphrase(args.passphrase_env)
    if args.role == "hub":
        generated = generate_hub_key(args.out, bits=args.bits, passphrase=passphrase)
    else:
        generated = generate_provider_key(args.out, passphrase=passphrase)
    print(f"key_id      {generated.key_id}")
    print(f"private key {generated.private_key_file} (owner-only; keep it out of any repository)")
    print(f"public key  {generated.public_key_file}")
    return 0


def _source_file(spec: str, args: argparse.Namespace) -> SourceFile:
    dataset, separator, path = spec.partition("=")
    if not separator or not dataset or not path:
        raise SystemExit(f"--file takes DATASET=PATH, got {spec!r}")
    return SourceFile(
        Path(path), dataset, encoding=args.encoding, delimiter=args.delimiter, gzip=not args.no_gzip
    )


def deliver_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hdh-deliver",
        description="Encrypt CSV or Parquet files for the hub, sign the manifest and upload over SFTP "
        "(hdh-delivery/1).",
    )
    parser.add_argument("--provider", required=True)
    parser.add_argument("--delivery-id", required=True)
    parser.add_argument(
        "--file",
        action="append",
        required=True,
        metavar="DATASET=PATH",
        help="a file and its dataset name, e.g. IR_BEN_R=ir_ben_r.csv (repeatable)",
    )
    parser.add_argument("--hub-public-key", type=Path, required=True)
    parser.add_argument("--signing-key", type=Path, required=True)
    parser.add_argument("--signing-key-passphrase-env")
    parser.add_argument("--encoding", default="utf-8", choices=["utf-8", "latin-1"])
    parser.add_argument("--delimiter", default=";")
    parser.add_argument("--no-gzip", action="store_true", help="send CSV uncompressed")
    parser.add_argument("--segment-size", type=int, default=DEFAULT_SEGMENT_SIZE)
    parser.add_argument("--work-dir", type=Path, help="keep the prepared delivery here (default: temporary)")
    parser.add_argument("--no-upload", action="store_true", help="prepare only")
    parser.add_argument("--sftp-host", default=os.environ.get("HDH_SFTP_HOST"))
    parser.add_argument("--sftp-port", type=int, default=int(os.environ.get("HDH_SFTP_PORT", "22")))
    parser.add_argument("--sftp-user", default=os.environ.get("HDH_SFTP_USER"))
    parser.add_argument("--sftp-key", type=Path, default=os.environ.get("HDH_SFTP_KEY_FILE"))
    parser.add_argument("--known-hosts", type=Path, default=os.environ.get("HDH_SFTP_KNOWN_HOSTS"))
    parser.add_argument("--inbox", default=os.environ.get("HDH_SFTP_INBOX"))
    args = parser.parse_args(argv)

    hub_key = load_public_key(args.hub_public_key.read_bytes())
    signing_key = load_private_key(args.signing_key, _passphrase(args.signing_key_passphrase_env))
    sources = [_source_file(spec, args) for spec in args.file]
    with tempfile.TemporaryDirectory(prefix="hdh-delivery-") as temporary:
        work = args.work_dir or Path(temporary)
        prepared = prepare_delivery(
            sources,
            work,
            provider=args.provider,
            delivery_id=args.delivery_id,
            hub_public_key=hub_key,
            signing_key=signing_key,
            segment_size=args.segment_size,
        )
        for entry in prepared.manifest.files:
            print(f"{entry.name}: {entry.dataset}, {entry.rows} rows, {entry.ciphertext_bytes} bytes")
        if args.no_upload:
            print(f"prepared in {work}")
            return 0
        missing = [
            name
            for name in ("sftp_host", "sftp_user", "sftp_key", "known_hosts", "inbox")
            if not getattr(args, name)
        ]
        if missing:
            raise SystemExit(f"to upload, set --{' --'.join(m.replace('_', '-') for m in missing)}")
        settings = SftpSettings(
            args.sftp_host, args.sftp_port, args.sftp_user, args.sftp_key, args.known_hosts
        )
        try:
            with sftp_session(settings) as session:
                remote = upload_delivery(session, prepared, args.inbox)
        except SftpUnavailable as error:
            print(f"upload failed ({error.reason}): {error.message}", file=sys.stderr)
            return 2
        print(f"uploaded to {remote} (signature last)")
    return 0
