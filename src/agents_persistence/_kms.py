"""AWS KMS as the key provider of `agents_persistence.encryption` (boto3 imported on use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from agents_persistence._keys import validate_key_id
from agents_persistence.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    CheckpointerError,
    ConfigurationError,
    MissingExtraError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["KmsKeyProvider"]


class KmsKeyProvider:
    """Key-encryption keys in AWS KMS: data keys are wrapped by KMS ``Encrypt``/``Decrypt``.

    A blob records the ARN of the KMS key that wrapped its data key (from the ``Encrypt``
    reply), so a key given by alias keeps working after the alias moves. Only the active key and
    the ``previous`` keys are accepted for reading: a blob naming another KMS key, even one this
    principal may use, raises `UnknownKeyError`. Key ids are resolved to ARNs with
    ``DescribeKey`` on first use. Every wrap and unwrap is a KMS request (share one data key per
    save with `new_data_key`, and one ``cache`` per load, to keep them few).

    Args:
        key_id: The active KMS key: key id, ARN, alias (``alias/name``) or alias ARN.
        previous: Older KMS keys, readable only.
        client: A boto3 KMS client to use (not closed here); by default one is created from
            ``region_name`` / ``endpoint_url`` and the usual AWS credential chain.
        region_name: Region of the created client.
        endpoint_url: Endpoint of the created client (a local KMS server).
        encryption_context: KMS encryption context of every wrap (not secret; logged by
            CloudTrail); the default names this library.

    Raises:
        MissingExtraError: boto3 is not installed (extra ``encryption-kms``).
    """

    def __init__(
        self,
        key_id: str,
        *,
        previous: tuple[str, ...] | list[str] = (),
        client: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> None:
        self._configured = (validate_key_id(key_id), *(validate_key_id(k) for k in previous))
        if client is None:
            try:
                import boto3  # type: ignore[import-untyped]
            except ModuleNotFoundError as exc:
                raise MissingExtraError(
                    "KmsKeyProvider needs boto3: pip install 'agents-persistence[encryption-kms]'",
                    extra="encryption-kms",
                    name=exc.name,
                ) from exc
            client = boto3.client("kms", region_name=region_name, endpoint_url=endpoint_url)
        self._client = client
        self._context = dict(encryption_context or {"library": "agents-persistence"})
        self._arns: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"KmsKeyProvider({self._configured[0]!r}, previous={list(self._configured[1:])!r})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "the KMS settings") -> Self:
        """A provider from its JSON form (the ``"kms"`` object of a key file).

        ``{"key_id": ACTIVE, "previous": [OLDER, ...], "region": R, "endpoint": URL}``: only
        ``key_id`` is required; region and endpoint default to the usual AWS settings
        (``AWS_REGION``, ``AWS_ENDPOINT_URL_KMS``), credentials come from the usual chain.

        Raises:
            ConfigurationError: A member is missing or of the wrong type.
        """
        unknown = set(data) - {"key_id", "previous", "region", "endpoint"}
        if unknown:
            raise ConfigurationError(f"{where}: unknown members {sorted(unknown)!r}")
        key_id, previous = data.get("key_id"), data.get("previous", [])
        if not isinstance(key_id, str):
            raise ConfigurationError(f'{where}: "key_id" must be the active KMS key')
        if not isinstance(previous, list) or not all(isinstance(k, str) for k in previous):
            raise ConfigurationError(f'{where}: "previous" must be a list of KMS key ids')
        region, endpoint = data.get("region"), data.get("endpoint")
        for member, value in (("region", region), ("endpoint", endpoint)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{where}: {member!r} must be a string")
        return cls(key_id, previous=previous, region_name=region, endpoint_url=endpoint)

    def _resolved(self) -> tuple[str, ...]:
        if self._arns is None:
            arns = []
            for key_id in self._configured:
                reply = self._call("DescribeKey", key_id, KeyId=key_id)
                arns.append(str(reply["KeyMetadata"]["Arn"]))
            self._arns = tuple(arns)
        return self._arns

    @property
    def active_key_id(self) -> str:
        """The ARN of the active KMS key (resolved once with ``DescribeKey``)."""
        return self._resolved()[0]

    @property
    def key_ids(self) -> frozenset[str]:
        """The ARNs of every KMS key accepted for reading."""
        return frozenset(self._resolved())

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap ``data_key`` with KMS ``Encrypt`` under the active key: ``(key ARN, blob)``."""
        active = self.active_key_id
        reply = self._call(
            "Encrypt", active, KeyId=active, Plaintext=data_key, EncryptionContext=self._context
        )
        return str(reply["KeyId"]), bytes(reply["CiphertextBlob"])

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key of ``wrapped``, by KMS ``Decrypt``; only accepted keys are used."""
        if key_id not in self._resolved():
            raise LookupError(key_id)
        reply = self._call(
            "Decrypt",
            key_id,
            KeyId=key_id,
            CiphertextBlob=wrapped,
            EncryptionContext=self._context,
        )
        return bytes(reply["Plaintext"])

    def _call(self, operation: str, key_id: str, **kwargs: Any) -> Any:
        """One KMS request, its errors translated (never quoting what was sent)."""
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        method = {"Encrypt": "encrypt", "Decrypt": "decrypt", "DescribeKey": "describe_key"}
        try:
            return getattr(self._client, method[operation])(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            where = f"KMS {operation} with key {key_id!r} failed ({code})"
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise ValueError(where) from exc
            if code in ("NotFoundException", "DisabledException", "KMSInvalidStateException"):
                if operation == "Decrypt":
                    raise LookupError(key_id) from exc
                raise ConfigurationError(where) from exc
            if code in ("AccessDeniedException", "UnrecognizedClientException"):
                raise AccessDeniedError(where) from exc
            if code in (
                "ThrottlingException",
                "LimitExceededException",
                "KMSInternalException",
                "DependencyTimeoutException",
            ):
                raise BackendUnavailableError(where) from exc
            raise CheckpointerError(where) from exc
        except BotoCoreError as exc:
            raise BackendUnavailableError(
                f"KMS {operation} with key {key_id!r} failed ({type(exc).__name__})"
            ) from exc
