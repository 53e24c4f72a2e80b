"""Where the command finds the keys of an encrypted store: a key file, AWS KMS, or the environment.

Keys never appear on the command line (where ``ps`` and shell history would show them): the
options name a file (``--keys FILE``) or a KMS key (``--kms-key-id ID``), and the environment
names a file (``AGENTS_PERSISTENCE_KEYS_FILE``) or holds the file's JSON itself
(``AGENTS_PERSISTENCE_KEYS``, for secrets injected by a platform).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents_persistence.errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

    from agents_persistence._keys import KeyProvider

__all__ = ["ENV_KEYS", "ENV_KEYS_FILE", "KeySource", "resolve_keys"]

ENV_KEYS_FILE = "AGENTS_PERSISTENCE_KEYS_FILE"
ENV_KEYS = "AGENTS_PERSISTENCE_KEYS"


@dataclass(frozen=True, slots=True)
class KeySource:
    """The key options given at one level (the command's own, or before the command name).

    Attributes:
        file: ``--keys FILE``.
        kms_key_ids: ``--kms-key-id`` values: the active KMS key first, then older ones.
    """

    file: Path | None = None
    kms_key_ids: tuple[str, ...] = ()

    @property
    def given(self) -> bool:
        """Whether this level names keys at all."""
        return self.file is not None or bool(self.kms_key_ids)

    def provider(self) -> KeyProvider:
        """The key provider these options name (a file's keyring or KMS settings, or KMS)."""
        if self.file is not None and self.kms_key_ids:
            raise ConfigurationError("give the keys once: --keys FILE or --kms-key-id ID")
        from agents_persistence.encryption import KmsKeyProvider, key_provider_from_file

        if self.file is not None:
            return key_provider_from_file(self.file)
        active, *previous = self.kms_key_ids
        return KmsKeyProvider(active, previous=previous)


def resolve_keys(*levels: KeySource) -> KeyProvider | None:
    """The key provider of the first level that names one, else of the environment, else None.

    Raises:
        ConfigurationError: A key file that cannot be read or is invalid (never quoting a
            key), or both a file and a KMS key at one level.
    """
    for level in levels:
        if level.given:
            return level.provider()
    from agents_persistence.encryption import key_provider_from_file, key_provider_from_json

    path = os.environ.get(ENV_KEYS_FILE)
    if path:
        return key_provider_from_file(path)
    text = os.environ.get(ENV_KEYS)
    if text:
        return key_provider_from_json(text, where=f"${ENV_KEYS}")
    return None
