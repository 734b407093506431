"""Encryption of secrets at rest (source API keys) and signing of page tokens.

cryptography's MultiFernet gives authenticated encryption and key rotation: the first key
encrypts, every key decrypts. Keys never appear in logs or errors.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from spark_grpc.errors import ConfigurationError

logger = logging.getLogger(__name__)


class SecretBox:
    """Encrypts and decrypts secrets with the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigurationError(
                "SPARK_ENCRYPTION_KEYS is not set: give one or more comma-separated Fernet "
                "keys (make one with `spark-grpc keygen`)."
            )
        try:
            fernets = [Fernet(k.encode()) for k in keys]
        except (ValueError, TypeError):
            raise ConfigurationError(
                "SPARK_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe "
                "base64-encoded bytes); make one with `spark-grpc keygen`."
            ) from None
        self._fernet = MultiFernet(fernets)
        # Page tokens are signed with a key derived from the first encryption key, so every
        # replica with the same settings accepts every other replica's tokens.
        self._signing_keys = [hashlib.sha256(b"page-token:" + k.encode()).digest() for k in keys]

    def encrypt(self, plaintext: str) -> bytes:
        """Encrypts with the first key."""
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        """Decrypts with whichever configured key made the ciphertext.

        Raises:
            ConfigurationError: no configured key can decrypt it (a key was removed too
                early from SPARK_ENCRYPTION_KEYS).
        """
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            raise ConfigurationError(
                "a stored secret cannot be decrypted with SPARK_ENCRYPTION_KEYS: keep the old "
                "key in the list until every secret is re-encrypted"
            ) from None

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-encrypts with the first key."""
        return self._fernet.rotate(ciphertext)

    def sign(self, payload: bytes) -> bytes:
        """A MAC over payload with the current signing key."""
        return hmac.new(self._signing_keys[0], payload, hashlib.sha256).digest()[:16]

    def verify(self, payload: bytes, mac: bytes) -> bool:
        """True when mac was made by any configured key (constant-time compare)."""
        return any(
            hmac.compare_digest(hmac.new(k, payload, hashlib.sha256).digest()[:16], mac)
            for k in self._signing_keys
        )


def load_or_create_dev_key(data_dir: Path) -> str:
    """The embedded default's key: generated once, kept in the data directory (mode 0600).

    A restart reads the same key, so secrets stored by an earlier run still decrypt.
    """
    path = data_dir / "encryption.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    logger.info("generated the embedded default's encryption key in %s", path)
    return key
