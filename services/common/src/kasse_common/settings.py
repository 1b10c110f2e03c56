"""Settings from the environment, one documented prefix per service.

Every service subclasses `ServiceSettings` and sets its own prefix, e.g. `KASSE_CATALOG_`.
The infrastructure endpoints shared by all services may also be given once, unprefixed
(`KASSE_KAFKA_BOOTSTRAP`, `KASSE_MONGO_URI`, …): a prefixed variable wins over the shared one.
Secrets are `SecretStr`, so they never show in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SHARED_PREFIX = "KASSE_"


Profile = Literal["production", "development"]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_SERVICE_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "service"

    # The deployment profile. Production is the default and fails closed (no usable default secret,
    # HTTPS only, no test-payment page); `make up` and the tests choose `development` explicitly
    # with KASSE_PROFILE=development, and a service says so in its log when it runs that way.
    profile: Profile = "production"

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for SSL / SASL_SSL (else the system's)")
    topic_prefix: str = Field(
        "", description="Prepended to every topic and consumer group: isolates environments and tests"
    )
    topic_replication_factor: int = Field(1, ge=1, description="For topics a service creates at start (3 in prod)")
    create_topics: bool = Field(True, description="Create missing contract topics at start")
    consumer_max_attempts: int = Field(
        5, ge=1, description="Handler attempts (non-transient errors) before dead-lettering"
    )
    consumer_backoff_initial_s: float = Field(0.05, ge=0)
    consumer_backoff_max_s: float = Field(2.0, ge=0)
    consumer_transient_retry_s: float = Field(
        900.0,
        gt=0,
        description="How long a record failing transiently (store/broker away) is retried before dead-lettering",
    )
    consumer_transient_backoff_initial_s: float = Field(0.5, ge=0, description="First pause of a partition")
    consumer_transient_backoff_max_s: float = Field(30.0, ge=0, description="Longest pause of a partition")

    # MongoDB (FerretDB v1 locally)
    mongo_uri: SecretStr = SecretStr("mongodb://127.0.0.1:37017/")
    mongo_database: str = ""

    # Outbox relay
    outbox_poll_interval_s: float = Field(
        5.0, gt=0, description="Safety-net scan for pending events (writes in this process wake the relay at once)"
    )
    outbox_batch_size: int = Field(100, ge=1)
    outbox_lease_s: float = Field(10.0, gt=0)

    # HTTP
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    max_body_bytes: int = Field(1_000_000, ge=1024)

    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="before")
    @classmethod
    def _shared_fallbacks(cls, data: Any) -> Any:
        """Take unprefixed KASSE_<FIELD> variables for fields the prefixed ones did not set."""
        if not isinstance(data, dict):
            return data
        for name in cls.model_fields:
            if name in data:
                continue
            value = os.environ.get(f"{SHARED_PREFIX}{name.upper()}")
            if value is not None:
                data[name] = value
        return data

    @property
    def is_development(self) -> bool:
        return self.profile == "development"

    @property
    def database_name(self) -> str:
        return self.mongo_database or f"kasse_{self.service_name}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def consumer_group(self) -> str:
        return f"{self.topic_prefix}kasse-{self.service_name}"
