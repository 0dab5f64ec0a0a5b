"""Names on the SFTP server: validated against the specification, never resolved as paths."""

from __future__ import annotations

import re
import stat

from hdh_deliver.errors import DeliveryRejected, Reason

PROVIDER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DELIVERY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
PART_SUFFIX = ".part"
ENCRYPTED_SUFFIX = ".hdhenc"


def is_provider(name: str) -> bool:
    return PROVIDER_RE.fullmatch(name) is not None


def is_delivery_id(name: str) -> bool:
    # The pattern already excludes "..", which starts with a dot; the explicit
    # test keeps the rule visible where the specification states it.
    return name != ".." and DELIVERY_ID_RE.fullmatch(name) is not None


def is_file_name(name: str) -> bool:
    return FILE_NAME_RE.fullmatch(name) is not None and not name.endswith(PART_SUFFIX)


def check_delivery_names(provider: str, delivery_id: str) -> None:
    """Refuse a provider or delivery folder name the specification does not allow."""
    if not is_provider(provider):
        raise DeliveryRejected(Reason.BAD_NAME, "The provider folder name is not allowed by hdh-delivery/1.")
    if not is_delivery_id(delivery_id):
        raise DeliveryRejected(Reason.BAD_NAME, "The delivery folder name is not allowed by hdh-delivery/1.")


def check_file_name(name: str) -> None:
    """Refuse a data file name with folders, ``..``, a ``.part`` suffix or other characters."""
    if (
        not isinstance(name, str)
        or not is_file_name(name)
        or name
        in (
            MANIFEST_NAME,
            SIGNATURE_NAME,
        )
    ):
        raise DeliveryRejected(
            Reason.BAD_NAME,
            "A file name in the manifest is not allowed by hdh-delivery/1 "
            "(letters, digits, '.', '_' and '-' only, no folders, at most 128 characters).",
            file=name if isinstance(name, str) and is_file_name(name) else None,
        )


def require_regular_file(mode: int, name: str) -> None:
    """Refuse anything but a regular file (symbolic link, folder, device): it is never followed or read."""
    if not stat.S_ISREG(mode):
        raise DeliveryRejected(
            Reason.BAD_NAME,
            "A file of the delivery is a symbolic link, a folder or a special file: only regular files "
            "are read.",
            file=name if is_file_name(name) or name in (MANIFEST_NAME, SIGNATURE_NAME) else None,
        )
