"""Who sent a correction: annotator ids, so that new tags need several people, not one.

Three kinds, always as "<kind>:<value>" (the `annotator` field of a feedback
message, contracts §3):

- "user:<identity>": the authenticated identity a trusted proxy put in a
  configured header (e.g. IAP's `X-Goog-Authenticated-User-Email`);
- "anon:<id>": an anonymous id the UI server keeps in a signed, HttpOnly,
  SameSite cookie, one per browser;
- "addr:<hash>": no better id: a hash of the client address.

The UI server forwards its choice to the replica in `ANNOTATOR_HEADER`. A
replica believes that header only from a trusted hop (the same trust that
lets it read X-Forwarded-For); otherwise, and when
the header is absent, it uses the client address. A client-chosen body field
is never believed: the edge overwrites it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ANNOTATOR_HEADER = "X-Tagloop-Annotator"
COOKIE_NAME = "tagloop_annotator"
COOKIE_MAX_AGE_SECONDS = 365 * 24 * 3600
MAX_IDENTITY_CHARS = 100


def address_annotator(address: str | None) -> str:
    """A stable pseudonym for a client address (the address itself is not stored)."""
    digest = hashlib.sha256((address or "unknown").encode("utf-8", "replace")).hexdigest()
    return f"addr:{digest[:16]}"


def identity_annotator(identity: str) -> str:
    """An authenticated identity as an annotator id; hashed if it is not plain short ASCII."""
    identity = identity.strip()
    plain = identity.isascii() and identity.isprintable() and " " not in identity
    if plain and 0 < len(identity) <= MAX_IDENTITY_CHARS:
        return f"user:{identity}"
    return f"user:sha256-{hashlib.sha256(identity.encode('utf-8', 'replace')).hexdigest()[:32]}"


def replica_annotator(header: str | None, address: str | None, trusted_hop: bool) -> str:
    """The annotator a replica records: the trusted hop's header, else the client address."""
    if trusted_hop and header:
        return header
    return address_annotator(address)


class AnnotatorCookies:
    """Anonymous annotator ids in cookies signed with HMAC-SHA256 (`id.signature`)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, annotator_id: str) -> str:
        mac = hmac.new(self._secret, annotator_id.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")

    def issue(self) -> str:
        """A new cookie value for a browser that has none (or a forged one)."""
        annotator_id = secrets.token_hex(16)
        return f"{annotator_id}.{self._signature(annotator_id)}"

    def verify(self, value: str | None) -> str | None:
        """The annotator id ("anon:<id>") of a genuine cookie value, else None."""
        if not value or value.count(".") != 1:
            return None
        annotator_id, signature = value.split(".")
        if not annotator_id.isascii() or not hmac.compare_digest(
            signature, self._signature(annotator_id)
        ):
            return None
        return f"anon:{annotator_id}"
