"""Settings from the environment, one documented prefix per service.

Every service subclasses `ServiceSettings` and sets its own prefix, e.g. `KASSE_CATALOG_`.
The infrastructure endpoints shared by all services may also be given once, unprefixed
(`KASSE_KAFKA_BOOTSTRAP`, `KASSE_MONGO_URI`, …): a prefixed variable wins over the shared one.
Secrets are `SecretStr`, so they never show in a repr, a log line or an error message.

Fail closed: every secret that guards a route or pays for something is named in `dev_secrets`
(field -> the value the development profile may use). In production (the default profile) each must
be set by the operator and must not be its public development value, or the settings refuse to load
and the service does not start. In development a missing one takes its dev value, and the runtime
logs which ones it did.
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
    # field name -> the value the development profile may use when it is unset; `{service}` is
    # replaced by service_name. Subclasses extend it: `{**ServiceSettings.dev_secrets, "x": "dev-x"}`.
    dev_secrets: ClassVar[dict[str, str]] = {"admin_token": "dev-{service}-admin"}

    # The deployment profile. Production is the default and fails closed (no usable default secret,
    # HTTPS only, no test-payment page); `make up` and the tests choose `development` explicitly
    # with KASSE_PROFILE=development, and a service says so in its log when it runs that way.
    profile: Profile = "production"

    admin_token: SecretStr | None = Field(
        None, description="Bearer token of /v1/admin/*; required in production (no default)"
    )
    trusted_proxies: str = Field(
        "",
        description=(
            "Comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For is believed (an ingress, the "
            "storefront); empty: none, the client's IP is the socket's"
        ),
    )

    rate_limits_enabled: bool = Field(
        True,
        description=(
            "Abuse limits (kasse_common.ratelimit: per-client/per-key request rates, stream caps); the test "
            "harness turns them off (many requests from 127.0.0.1), a test of a limit turns them on"
        ),
    )

    # Customer identity (kasse_common.identity): OIDC tokens verified against the provider's JWKS or a key.
    identity_jwks_url: str | None = Field(None, description="The identity provider's JWKS URL (OIDC jwks_uri)")
    identity_public_key: SecretStr | None = Field(None, description="Or a PEM public key that signs customer tokens")
    identity_issuer: str | None = Field(None, description="Required `iss` of customer tokens, when set")
    identity_audience: str | None = Field(None, description="Required `aud` of customer tokens, when set")
    identity_algorithms: str = Field("RS256,ES256,EdDSA", description="Accepted signature algorithms")

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
    consumer_concurrency: int = Field(
        16,
        ge=1,
        description="Records a lane (one Kafka consumer) handles at once: records of one key (aggregate) one "
        "after another in offset order, different keys side by side",
    )
    consumer_commit_interval_s: float = Field(
        0.5,
        gt=0,
        description="How often a lane commits the offsets below which every record's handling has returned "
        "(also when partitions are revoked and at stop), instead of one broker round trip per record",
    )
    parking_retry_interval_s: float = Field(
        10.0, gt=0, description="How often events parked for an aggregate that did not exist yet are tried again"
    )
    parking_max_age_s: float = Field(
        86_400.0, gt=0, description="A parked event whose aggregate never arrived is dead-lettered after this"
    )
    consumer_watchdog_interval_s: float = Field(5.0, gt=0, description="How often a stopped consumer is looked for")
    consumer_stall_s: float = Field(
        60.0,
        gt=0,
        description="A consumer handing over no record this long while its unpaused partitions have records "
        "waiting is stalled and restarted",
    )
    consumer_dead_grace_s: float = Field(
        60.0, gt=0, description="A consumer stopped this long despite restarts fails /healthz (liveness)"
    )
    dead_letter_check_interval_s: float = Field(
        60.0, gt=0, description="How often dead letters are counted (metrics) and transient ones redriven"
    )
    dead_letter_auto_redrive_after_s: float = Field(
        300.0,
        ge=0,
        description="A record dead-lettered because the store or broker stayed away beyond the retry window "
        "is redriven by the service itself this long after, once it reaches both again (0: never; "
        "other dead letters always wait for `make dlq` / the admin API)",
    )
    dead_letter_max_auto_redrives: int = Field(
        3,
        ge=1,
        description="A record the service redrove itself this many times (header `kasse_auto_redrives`) and that "
        "was dead-lettered again is not redriven by itself any more: it fails for another reason than an outage "
        "(e.g. a write conflict that never clears) and waits for a person (kasse_dead_letters_waiting, the alert)",
    )
    consumer_max_stall_restarts: int = Field(
        3,
        ge=1,
        description="A consumer restarted this many times for stalling, with no record handed over and never "
        "found caught up in between, fails /healthz and /readyz (Kubernetes restarts the pod)",
    )

    # MongoDB (FerretDB v1 locally)
    mongo_uri: SecretStr = SecretStr("mongodb://127.0.0.1:37017/")
    mongo_database: str = ""

    # Outbox relay
    outbox_poll_interval_s: float = Field(
        86400.0,
        gt=0,
        description="Belt-and-braces scan for pending events no live process holds (a full read on FerretDB v1, "
        "so a day: an hour cost ~1 % of a core amortised after 10,000 orders); the relay also scans at start and "
        "when another relay of the database stops beating; writes in this process wake the relay at once, "
        "refused events are retried from memory and foreign leases re-read by _id",
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

    @model_validator(mode="after")
    def _fail_closed(self) -> ServiceSettings:
        missing, public = [], []
        for name, dev_value in self.dev_secrets.items():
            dev_value = dev_value.format(service=self.service_name)
            value = getattr(self, name)
            secret = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
            if self.is_development:
                if not secret:
                    object.__setattr__(self, name, SecretStr(dev_value))  # frozen model: set once, here
            elif not secret:
                missing.append(self.env_name(name))
            elif secret == dev_value:
                public.append(self.env_name(name))
        if missing or public:
            reasons = []
            if missing:
                reasons.append(f"not set: {', '.join(missing)}")
            if public:
                reasons.append(f"set to its public development value: {', '.join(public)}")
            raise ValueError(
                f"profile {self.profile!r} fails closed, secrets {'; '.join(reasons)} "
                "(set them, or choose KASSE_PROFILE=development on a developer's machine)"
            )
        return self

    def dev_secrets_in_use(self) -> list[str]:
        """The environment variables whose development value this (development) instance runs with."""
        used = []
        for name, dev_value in self.dev_secrets.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value() == dev_value.format(service=self.service_name):
                used.append(self.env_name(name))
        return used

    def revealed(self) -> dict[str, Any]:
        """Every field's value, JSON-ready and with the secrets in clear: `type(self)(**revealed())` builds
        these settings again (how a service hands its settings to a child process, on a pipe: not in its
        arguments or environment, which `ps` and /proc show)."""
        values = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                values[name] = value.get_secret_value()
        return values

    def secret(self, name: str) -> SecretStr:
        """A `dev_secrets` field, which validation guarantees is set (typed for the caller)."""
        value = getattr(self, name)
        assert isinstance(value, SecretStr), f"{name} is not a validated secret"
        return value

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

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
