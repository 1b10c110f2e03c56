"""Settings of the metrics service (env prefix KASSE_METRICS_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from kasse_common.settings import ServiceSettings
from kasse_contracts.topics import METRICS_FACTS_BY_SESSION
from kasse_metrics.domain.kpis import DEFAULT_STEPS, FunnelRules


class MetricsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KASSE_METRICS_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "metrics"

    http_port: int = 8005
    max_kpi_streams: int | None = Field(
        100, ge=1, description="SSE streams (KPIs + experiments) open at once per instance; more get 429"
    )
    admin_token: SecretStr | None = Field(None, description="Bearer token of /v1/admin/* (the consumer switch)")

    funnel_steps: tuple[str, ...] = Field(DEFAULT_STEPS, description="Ordered funnel steps (JSON list in the env)")
    funnel_conversion_window_s: float = Field(30 * 24 * 3600, gt=0, description="Max time from first to last step")

    dedupe_window_ids: int = Field(
        200_000,
        ge=1,
        description="Event ids remembered for dedupe (the latest ones): a re-publication arriving after this many"
        " newer events is counted again. Crash recovery does not rely on it (offsets are stored with the state)",
    )
    minute_resolution_minutes: int = Field(
        2880, ge=1440, description="Minutes kept at minute resolution; older ones are merged into days"
    )
    snapshot_interval_s: float = Field(30.0, gt=0, description="How often the projection is snapshotted")
    reader_heartbeat_interval_s: float = Field(
        10.0, gt=0, description="How often an instance records how far it has read the segments"
    )
    reader_ttl_s: float = Field(
        120.0,
        gt=0,
        description="An instance silent this long no longer holds back the deletion of segments below the"
        " snapshot (it reloads from the snapshot when it comes back)",
    )
    snapshot_min_new_facts: int = Field(
        1, ge=1, description="Skip a snapshot when fewer facts than this were applied since the last one"
    )
    group_instance_id: str | None = Field(
        None,
        description="Static membership of the consumer group (Kafka's group.instance.id), unique per instance and"
        " stable across its restarts (the chart uses the pod name): a restarted instance takes its partitions"
        " back at once instead of waiting for the session of its killed predecessor to time out. Unset: a"
        " dynamic member (an instance that stops leaves the group at once, a killed one after the timeout)",
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=6000,
        description="Consumer group session timeout: how long a silent member keeps its partitions (the broker's"
        " minimum is 6 s; a static member that stops is replaced after this long, unless it restarts first)",
    )
    deployment: str = Field(
        "",
        pattern=r"^[a-z0-9-]{0,32}$",
        description="Name of an independent metrics deployment on the same contract topics (blue/green, a fresh"
        " database replaying history): its consumer groups and internal topic carry it, so it shares nothing"
        " with the default one. Empty: the default deployment",
    )
    router_max_facts_per_record: int = Field(
        1000, ge=1, description="Facts packed into one internal record at most (Kafka's message size limit)"
    )
    router_process: bool = Field(
        True,
        description=(
            "Run the router stage (decode, re-key, produce) in a child process of its own, beside the state stage"
            " (apply, checkpoint, serve): each stage gets a core, where one Python process gets one (bench (c) at"
            " 1M events: 33,000 -> 54,000 events/s on two cores). Off: both stages on one event loop (a pod"
            " limited to one core gains nothing from the second process)"
        ),
    )
    router_commit_interval_s: float = Field(
        0.2,
        gt=0,
        description=(
            "The router commits its source offsets at most this often, one commit at a time (a commit per poll"
            " starved the group's heartbeats at a few thousand events/s); a crash routes up to this long of"
            " records again, which the state stage skips by event id"
        ),
    )
    ingest_max_records: int = Field(5000, ge=1, description="Records per poll")
    state_max_records: int = Field(
        4,
        ge=1,
        description=(
            "Internal-topic records per poll of the state stage. Each packs up to a router batch's facts for "
            "one partition (hundreds to thousands), so this bounds how long one fold holds the event loop"
        ),
    )
    ingest_poll_timeout_ms: int = Field(50, ge=1)
    checkpoint_interval_s: float = Field(0.2, gt=0, description="How often consumed records are stored")
    checkpoint_max_records: int = Field(20_000, ge=1, description="Checkpoint sooner when this many are pending")
    checkpoint_max_pending_records: int = Field(
        200_000, ge=1, description="Stop consuming until a checkpoint is stored when this many are pending"
    )
    checkpoint_max_pending_facts: int = Field(
        50_000,
        ge=1,
        description=(
            "Stop consuming until a checkpoint is stored when this many facts are pending (a router record packs"
            " up to a thousand, so the record bound alone let a slow store hold millions in memory)"
        ),
    )
    gc_freeze: bool = Field(
        False,
        description="Freeze the heap after each checkpoint: no full-GC pauses over the projection, but garbage"
        " cycles alive at a checkpoint are never freed (off by default: a slow leak in a long-running service)",
    )
    segment_max_facts: int = Field(5000, ge=1, description="Facts per segment document (16 MB document limit)")
    projection_poll_interval_s: float = Field(
        0.05, gt=0, description="How often an instance reads the aggregates the other partitions' owners published"
    )
    partial_publish_interval_s: float = Field(
        0.05, gt=0, description="How often an instance publishes what changed in its partitions' aggregates"
    )
    partial_publish_max_minutes: int = Field(
        200,
        ge=2,
        description=(
            "Changed minutes published per partition and turn at most (the newest and the oldest first; the rest"
            " in the next turns): in a replay of 2.5M events up to 33,000 minutes were waiting across six"
            " partitions, each publication copying and encoding all of them in one turn of the event loop"
        ),
    )
    experiments_refresh_interval_s: float = Field(
        1.0, gt=0, description="How often an instance re-reads the experiment definitions (another may change them)"
    )
    stream_min_interval_s: float = Field(0.25, gt=0, description="At most one SSE update per this interval")

    @model_validator(mode="after")
    def _ttl_above_heartbeat(self) -> MetricsSettings:
        if self.reader_ttl_s <= 2 * self.reader_heartbeat_interval_s:
            raise ValueError("reader_ttl_s must be more than twice reader_heartbeat_interval_s")
        return self

    @property
    def consumer_group(self) -> str:
        """The router's group (the contract topics)."""
        base = f"{self.topic_prefix}kasse-{self.service_name}"
        return f"{base}-{self.deployment}" if self.deployment else base

    @property
    def state_consumer_group(self) -> str:
        """The state stage's group (the internal facts topic)."""
        return f"{self.consumer_group}-state"

    @property
    def internal_topic(self) -> str:
        """The router's output, the state stage's input (`kasse.metrics.facts-by-session.v1`)."""
        if not self.deployment:
            return self.topic(METRICS_FACTS_BY_SESSION)
        return self.topic(METRICS_FACTS_BY_SESSION.replace("kasse.metrics.", f"kasse.metrics-{self.deployment}.", 1))

    def funnel_rules(self) -> FunnelRules:
        from datetime import timedelta

        return FunnelRules(tuple(self.funnel_steps), timedelta(seconds=self.funnel_conversion_window_s))
