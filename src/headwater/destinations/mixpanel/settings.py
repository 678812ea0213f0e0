"""Settings of the ``mixpanel`` destination."""

from __future__ import annotations

from typing import Self

from pydantic import SecretStr, field_validator, model_validator

from headwater.destinations.base import DestinationSettings
from headwater.destinations.values import base_url

REGIONS = {"us": "https://api.mixpanel.com", "eu": "https://api-eu.mixpanel.com",
           "in": "https://api-in.mixpanel.com"}  # fmt: skip


class MixpanelSettings(DestinationSettings):
    """A Mixpanel project: its token, a credential for ``/import``, where its data is kept."""

    project_token: SecretStr
    """The project token (Project Settings → Access Keys): ``$token`` of profile and group
    updates, and the ``/import`` credential when neither an API secret nor a service
    account is set. Redacted from everything Headwater keeps."""

    api_secret: SecretStr | None = None
    """The project's API secret: ``/import``'s HTTP Basic user name (empty password), as
    Segment sends it."""

    service_account_username: str | None = None
    """A service account's user name (Organization Settings → Service Accounts); with
    ``service_account_secret`` and ``project_id``, ``/import``'s credential, preferred over
    ``api_secret``."""

    service_account_secret: SecretStr | None = None
    """The service account's secret."""

    project_id: str | None = None
    """The project's id, sent as ``?project_id=`` with a service account (required then)."""

    endpoint: str = REGIONS["us"]
    """``us`` (``https://api.mixpanel.com``), ``eu`` (``https://api-eu.mixpanel.com``), ``in``
    (``https://api-in.mixpanel.com``) or any base URL (a proxy, or a fake in tests)."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return base_url(value, REGIONS, "Mixpanel")

    @model_validator(mode="after")
    def _check_service_account(self) -> Self:
        user, secret = self.service_account_username, self.service_account_secret
        if (user is None) != (secret is None):
            missing = "service_account_secret" if secret is None else "service_account_username"
            raise ValueError(
                f"a service account needs both its user name and secret: set {missing}"
            )
        if user is not None and not self.project_id:
            raise ValueError("a service account needs project_id (the project's id, a number)")
        return self

    def import_credential(self) -> tuple[str, str]:
        """(user, password) of ``/import``'s HTTP Basic authorization."""
        if self.service_account_username is not None and self.service_account_secret is not None:
            return self.service_account_username, self.service_account_secret.get_secret_value()
        if self.api_secret is not None:
            return self.api_secret.get_secret_value(), ""
        return self.project_token.get_secret_value(), ""

    def secrets(self) -> frozenset[str]:
        values = (self.project_token, self.api_secret, self.service_account_secret)
        return frozenset(v.get_secret_value() for v in values if v is not None)
