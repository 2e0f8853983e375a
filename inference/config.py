"""Typed configuration of the Serve application (:class:`ServeAppConfig`), loadable from YAML.

One model holds every knob of the app: which model artefact (or the no-compute stand-in used by
the scaling benchmark), batching, replicas/autoscaling, the ingress in-flight window, deadline
policy, per-recipe ROI and default deadline, topics, and the Kafka/Redis connection settings.

Defaults point at the local stack, so ``ServeAppConfig(model_dir=...)`` runs out of the box.
Secrets (Kafka SASL password, Redis password) live in :class:`~ingest.settings.KafkaSettings` and
:class:`~inference.settings.RedisSettings` as ``SecretStr``; nested settings are built through
their own constructors so the ``GRDLINE_KAFKA_*`` / ``GRDLINE_REDIS_*`` environment still applies
when a YAML file gives only some of their fields.

Knobs that change live (``serve deploy`` with a new ``user_config``; no replica restart):
:class:`ModelTuning` (batch size, batch wait, thresholds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inference.settings import RedisSettings
from ingest.settings import KafkaSettings, load_settings
from ingest.topics import DLQ, FRAMES, FRAMES_REPLAY, REJECTS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: Ray Serve settings that put a replica's user code, and the router of the handles it calls, on
#: the replica's main event loop (ray.serve._private.constants; Serve's throughput-optimized mode).
#: Not on by default (see ``IngressSettings.env_vars``); ``env_vars`` of either deployment can set them.
SERVE_SAME_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}


class ModelTuning(_Strict):
    """What the model deployment's ``reconfigure`` applies live (its Serve ``user_config``).

    ``threshold`` / ``pixel_threshold`` ``None`` keep the artefact's calibrated values.
    """

    max_batch_size: int = Field(default=16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0.0, le=5.0)
    threshold: float | None = None
    pixel_threshold: float | None = None
    #: Fault injection for drills, honoured by the stand-in model only (a real model refuses it):
    #: ``raise`` = every predict raises, ``nan`` = every score is NaN, ``hang`` = predict blocks
    #: until the fault is lifted (a stuck executor, a CUDA deadlock). Live, so a drill can make the
    #: model fail and then recover without a restart.
    fault: Literal["raise", "nan", "hang"] | None = None


class StandInModel(_Strict):
    """A model that does no compute: each batch takes ``batch_latency_ms`` (sleep) and scores
    every image by its mean brightness / 255. For scaling benchmarks and deadline tests."""

    batch_latency_ms: float = Field(default=20.0, ge=0.0)
    image_size: int = Field(default=64, ge=8)
    channels: Literal[1, 3] = 1
    threshold: float = 0.5
    pixel_threshold: float = 0.5
    version: str = "standin-1"


class AutoscalingSettings(_Strict):
    """Serve autoscaling of the model deployment on ongoing requests per replica."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    #: Handle calls per replica (each up to ``ingress.request_group`` frames); None = one running
    #: and one queued batch (:meth:`ServeAppConfig.target_ongoing_requests`).
    target_ongoing_requests: float | None = Field(default=None, gt=0)
    upscale_delay_s: float = Field(default=5.0, ge=0)
    downscale_delay_s: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self


class ModelDeploymentSettings(_Strict):
    """Placement and scaling of ``GRDNetModel``."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Runtime: ``torch``, or ``onnxruntime`` (the fp32 ONNX export, ``grdline export``; CPU only).
    #: None = the artefact's ``inference.backend``.
    backend: Literal["torch", "onnxruntime"] | None = None
    #: Numeric mode; None = the artefact's ``inference.cpu_precision`` / ``gpu_precision``.
    #: ``auto`` serves a low precision only where training calibrated it
    #: (``model.predictor.resolve_precision``); a forced one the artefact did not calibrate uses
    #: the fp32 thresholds. fp16 is CUDA only; onnxruntime runs fp32 only.
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = None
    #: GPU share per replica when a GPU is present (device auto/cuda); fractional packs replicas.
    num_gpus: float = Field(default=0.5, gt=0, le=8)
    num_cpus: float = Field(default=1.0, ge=0)
    #: Fixed replica count; ignored when ``autoscaling`` is set.
    num_replicas: int = Field(default=1, ge=1)
    autoscaling: AutoscalingSettings | None = None
    #: Batches a replica accepts beyond the one running, so the next batch fills while one runs.
    #: ``max_ongoing_requests = max_batch_size * (1 + queue_batches)`` handle calls.
    queue_batches: int = Field(default=2, ge=1)
    #: torch intra-op threads per replica (CPU); None leaves torch's default.
    torch_threads: int | None = Field(default=None, ge=1)
    warmup_batches: int = Field(default=2, ge=0)
    #: Environment of the model replica processes (Ray ``runtime_env.env_vars``). PASSIVE: OpenMP
    #: threads sleep between batches instead of spinning, leaving the cores to the ingress, Kafka
    #: and Redis clients (benchmarks/bench_runtimes.py: same model speed, far less CPU burnt idle).
    env_vars: dict[str, str] = Field(default_factory=lambda: {"OMP_WAIT_POLICY": "PASSIVE"})
    #: ``check_health`` fails (Serve replaces the replica) after this many consecutive batches that
    #: raised or produced a non-finite score.
    unhealthy_after_failures: int = Field(default=5, ge=1)
    #: ``check_health`` fails when the oldest queued request has waited longer than this (None:
    #: :meth:`ServeAppConfig.model_queue_age_bound_s`, twice ``deadline.default_bound_ms``).
    max_queue_age_s: float | None = Field(default=None, gt=0)
    #: ``check_health`` fails when requests wait and no batch finished for this long — a hung
    #: predict (None: :meth:`ServeAppConfig.model_stall_bound_s`, twice ``deadline.default_bound_ms``).
    max_batch_stall_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _runtime_fits(self) -> ModelDeploymentSettings:
        self.check_runtime(None if self.device == "auto" else self.device)
        return self

    def check_runtime(self, device: str | None) -> None:
        """Refuse a ``backend`` / ``precision`` that ``device`` (``cpu`` / ``cuda``; None = not
        known yet) cannot run, naming the field. Checked when the config loads, and again with the
        device a replica resolved ``auto`` to, before the model is loaded."""
        if self.backend == "onnxruntime" and self.precision not in (None, "auto", "fp32"):
            raise ValueError(f"model.precision {self.precision!r} needs model.backend torch: "
                             "onnxruntime runs the fp32 export")
        if self.backend == "onnxruntime" and device == "cuda":
            raise ValueError(f"model.backend 'onnxruntime' runs on the CPU only, but model.device "
                             f"{self.device!r} is cuda here; set model.device: cpu, or "
                             "model.backend: torch on a GPU")
        if self.precision == "fp16" and device == "cpu":
            raise ValueError(f"model.precision 'fp16' is CUDA only, but model.device {self.device!r} "
                             "is cpu here; use fp32, bf16 or auto")


class IngressSettings(_Strict):
    """The Kafka-consuming ``LineIngress`` deployment."""

    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.5, ge=0)
    #: Environment of the ingress replica processes (Ray ``runtime_env.env_vars``). Measured and
    #: left at Ray's default: Serve's same-loop flags (``SERVE_SAME_LOOP``) saved ~1 ms CPU per
    #: frame, but every run with them showed ~300 ms stalls of the Kafka stage (so did one of two
    #: runs without; docs/evaluations/pipeline.md).
    env_vars: dict[str, str] = Field(default_factory=dict)
    group_id: str = "grdline-inference"
    #: Frames handed to the model and not yet committed, per replica. Bounds memory; should be a
    #: few batches so batches fill (>= max_batch_size * model replicas).
    inflight_window: int = Field(default=64, ge=1)
    #: The same window in bytes of polled records (a poll may overshoot it by one fetch).
    inflight_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    #: Health turns red when the oldest frame in flight was polled longer ago than this (a frame
    #: stuck between poll and commit stalls its partition's watermark).
    max_inflight_age_s: float = Field(default=120.0, gt=0)
    #: Health turns red when the consumer loop has not gone round, or every poll failed, for this long.
    consumer_stall_s: float = Field(default=60.0, gt=0)
    #: Model calls per group before its frames go to the fail-safe policy.
    model_attempts: int = Field(default=3, ge=1)
    #: At most this many frames of one poll and partition travel in one handle call (Serve's
    #: per-call cost is paid once for them); a call never waits for more. 1 = a call per frame.
    request_group: int = Field(default=4, ge=1, le=64)
    #: Resume consuming when in-flight falls to this fraction of the window.
    resume_fraction: float = Field(default=0.5, gt=0, le=1)
    poll_timeout_ms: int = Field(default=100, ge=1)
    commit_interval_ms: int = Field(default=200, ge=1)
    #: Commits are asynchronous, one in flight: one unanswered after this long counts as failed and
    #: the next one is sent; the shutdown commit blocks at most this long. A commit that fails is
    #: retried at the next interval.
    commit_timeout_ms: int = Field(default=5_000, ge=100)
    #: Ceiling of kafka-python's reconnect backoff (its default is 30 s) for the ingress consumer and
    #: producer: after a broker restart decisions resume within about this long, not half a minute.
    reconnect_backoff_max_ms: int = Field(default=1_000, ge=50)
    #: Sink flush: at most this many results, or after this many ms from the first one.
    sink_flush_max: int = Field(default=64, ge=1)
    sink_flush_interval_ms: float = Field(default=5.0, ge=0)
    #: On revoke (rebalance), wait this long for in-flight frames of revoked partitions.
    revoke_drain_timeout_s: float = Field(default=10.0, ge=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    #: Also the group's rebalance timeout (classic protocol): how long a rebalance waits for a member
    #: that has not rejoined. The consumer thread polls every ``poll_timeout_ms`` and blocks at most
    #: ``revoke_drain_timeout_s`` in a rebalance, so a minute is ample and bounds a stalled rebalance.
    max_poll_interval_ms: int = Field(default=60_000, ge=1000)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    fetch_max_bytes: int = Field(default=52_428_800, ge=1024)
    #: A consumer without partitions for this long logs a warning (repeated at this interval) — a
    #: stalled group join, or more ingress replicas than partitions.
    unassigned_warn_s: float = Field(default=30.0, gt=0)
    #: Health turns red when this replica has held no partition for this long and the frames topic
    #: has no partitions (misnamed or deleted) or at least ``num_replicas`` of them (a stalled
    #: join); more than a rebalance may take (``max_poll_interval_ms``). See :mod:`inference.health`.
    unassigned_unhealthy_s: float = Field(default=120.0, gt=0)
    #: Kafka clients are created lazily and retried with backoff (a cold start in any order);
    #: health stays green this long while the consumer cannot reach Kafka, then turns red.
    connect_grace_s: float = Field(default=120.0, gt=0)
    #: Backoff ceiling between attempts to create the consumer while Kafka is unreachable.
    connect_backoff_max_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _rebalance_fits(self) -> IngressSettings:
        if self.max_poll_interval_ms < self.revoke_drain_timeout_s * 1000 + 5000:
            raise ValueError(
                f"max_poll_interval_ms ({self.max_poll_interval_ms}) must exceed revoke_drain_timeout_s "
                f"({self.revoke_drain_timeout_s}) by at least 5 s: a rebalance blocks the poll loop that long"
            )
        if self.unassigned_unhealthy_s * 1000 <= self.max_poll_interval_ms:
            raise ValueError(
                f"unassigned_unhealthy_s ({self.unassigned_unhealthy_s}) must exceed max_poll_interval_ms "
                f"({self.max_poll_interval_ms} ms): a rebalance may leave a replica without partitions that long"
            )
        return self


class DeadlineSettings(_Strict):
    """What happens to a frame that cannot be decided before its deadline."""

    #: ``reject``: fail-safe, the item is rejected. ``pass``: the item passes, the result is flagged.
    late_policy: Literal["reject", "pass"] = "reject"
    #: Deadline when neither the frame header nor its recipe gives one (None = no deadline).
    default_deadline_ms: int | None = Field(default=None, ge=1)
    #: Time kept in reserve for the sinks: the model must answer by deadline - margin.
    sink_margin_ms: float = Field(default=5.0, ge=0)
    #: How long a frame *without* a deadline may wait for the model before the fail-safe policy.
    default_bound_ms: int = Field(default=30_000, ge=1)
    #: What a frame the model failed on (error, non-finite score, no answer within the bound)
    #: becomes: ``reject`` (fail-safe, the default) or ``pass`` (flagged; commissioning only).
    failsafe_policy: Literal["reject", "pass"] = "reject"


class RecipeSettings(_Strict):
    """Per-recipe inference settings. ``roi``: ``recipe`` = the recipe's fixed ROI
    (``ingest.simulator.roi_mask_for_recipe``), ``none`` = whole frame, otherwise a PNG path
    (non-zero = ROI)."""

    roi: str = "recipe"
    deadline_ms: int | None = Field(default=None, ge=1)


class TopicSettings(_Strict):
    #: The topic this app consumes (an app that decides replays sets it to ``replay``).
    frames: str = FRAMES
    #: The replay topic: a frame consumed from it is a replay (its results go to the replay
    #: namespace, it has no deadline and it never actuates), whatever its headers say. A frame
    #: consumed from any other topic is live and may actuate, whatever its headers say
    #: (:mod:`inference.decision`): a header never decides actuation.
    replay: str = FRAMES_REPLAY
    rejects: str = REJECTS
    dlq: str = DLQ


class RedisSinkSettings(_Strict):
    result_ttl_s: int = Field(default=24 * 3600, ge=1)
    stream_maxlen: int = Field(default=10_000, ge=1)
    #: Streams expire this long after their last entry.
    stream_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    #: TTL of the per-item reject claim (idempotency key); longer than any redelivery delay.
    reject_claim_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    #: The reject/dead-letter producer's ``delivery_timeout_ms``: the final outcome of a send is
    #: known within this (then it is waited for, never abandoned).
    delivery_timeout_ms: int = Field(default=15_000, ge=1000)
    #: Another sender's ``pending`` reject claim older than this is taken over (its sender died);
    #: must exceed the delivery timeout, so a live sender's claim is never taken.
    reject_takeover_s: float = Field(default=45.0, gt=0)
    #: Socket (and connect) timeout of the ingress' Redis clients: a Redis that hangs fails the
    #: flush (retried) instead of blocking the sink or consumer thread.
    redis_timeout_s: float = Field(default=5.0, gt=0)
    #: Backoff between flush retries while a sink fails (doubling up to the maximum).
    retry_backoff_max_s: float = Field(default=2.0, gt=0)
    #: Health turns red when the sinks have failed for this long.
    unhealthy_after_s: float = Field(default=60.0, gt=0)
    #: Each ingress replica reads Redis ``INFO memory`` this often into the gauges behind
    #: ``GrdlineRedisMemoryHigh`` (:mod:`inference.redis_memory`).
    memory_sample_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _takeover_outlasts_a_send(self) -> RedisSinkSettings:
        if self.reject_takeover_s * 1000 <= self.delivery_timeout_ms + 5000:
            raise ValueError(
                f"reject_takeover_s ({self.reject_takeover_s}) must exceed delivery_timeout_ms "
                f"({self.delivery_timeout_ms}) by 5 s: a live sender's claim must never be taken over"
            )
        return self


class ReplaySettings(_Strict):
    """Frames consumed from the replay topic (``topics.replay``, where ``grdline replay`` writes).

    They never actuate: there is no switch for it (a replayed part left the line long ago, and a
    setting that lets replays send reject commands is a way to scrap parts without a camera)."""

    #: Their results go under ``{redis.key_prefix}:{namespace}`` (never the live results).
    namespace: str = Field(default="replay", pattern=r"^[A-Za-z0-9_.-]{1,32}$")


class LimitSettings(_Strict):
    """Bounds on what grows with the input."""

    #: ROI masks cached (least recently used dropped beyond).
    roi_cache_size: int = Field(default=64, ge=1)
    #: Distinct (line, camera) label pairs per metric; later ones are recorded as ``other``.
    metric_label_values: int = Field(default=256, ge=1)


class ExpectedCamera(_Strict):
    """A camera whose frames this app's frames topic must carry while the line runs."""

    line: str = Field(min_length=1)
    camera: str = Field(min_length=1)


class ServeAppConfig(_Strict):
    """Everything the GRD-Line Serve application needs. ``extra="forbid"`` at every level."""

    app_name: str = "grdline"
    route_prefix: str = "/grdline"
    #: Level of the project's loggers inside the replicas (``inference.logs``).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    model_dir: Path | None = None
    standin: StandInModel | None = None
    tuning: ModelTuning = Field(default_factory=ModelTuning)
    model: ModelDeploymentSettings = Field(default_factory=ModelDeploymentSettings)
    ingress: IngressSettings = Field(default_factory=IngressSettings)
    deadline: DeadlineSettings = Field(default_factory=DeadlineSettings)
    recipes: dict[str, RecipeSettings] = Field(default_factory=dict)
    default_recipe: RecipeSettings = Field(default_factory=RecipeSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    sink: RedisSinkSettings = Field(default_factory=RedisSinkSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    #: The (line, camera) pairs the line runs with: each ingress replica exports them
    #: (``grdline_camera_expected``) and ``GrdlineNoFramesConsumed`` fires for any of them with no
    #: frame consumed — a camera that stopped, or a misnamed/deleted frames topic (no series at
    #: all). Empty: that alert cannot watch this app (logged at start-up).
    expected_cameras: list[ExpectedCamera] = Field(default_factory=list)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)

    @field_validator("kafka", mode="before")
    @classmethod
    def _kafka_env(cls, v: Any) -> Any:
        return KafkaSettings(**v) if isinstance(v, dict) else v

    @field_validator("redis", mode="before")
    @classmethod
    def _redis_env(cls, v: Any) -> Any:
        return RedisSettings(**v) if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _one_model(self) -> ServeAppConfig:
        if (self.model_dir is None) == (self.standin is None):
            raise ValueError("exactly one of model_dir and standin must be set")
        if self.tuning.fault is not None and self.standin is None:
            raise ValueError("tuning.fault is for the stand-in model only")
        return self

    @model_validator(mode="after")
    def _model_health_bounds(self) -> ServeAppConfig:
        least = self.deadline.default_bound_ms / 1000.0
        for name in ("max_queue_age_s", "max_batch_stall_s"):
            value = getattr(self.model, name)
            if value is not None and value < least:
                raise ValueError(
                    f"model.{name} ({value}) must be at least deadline.default_bound_ms ({least:g} s): a "
                    "request may wait that long for a busy model, a tighter bound replaces healthy replicas")
        return self

    def model_queue_age_bound_s(self) -> float:
        """Model health: the oldest queued request may wait this long. Default: twice the longest
        a frame may wait for the model before the ingress gives it up (``default_bound_ms``) — a
        request older than that was given up on, and only a stuck batcher keeps it queued."""
        v = self.model.max_queue_age_s
        return v if v is not None else 2 * self.deadline.default_bound_ms / 1000.0

    def model_stall_bound_s(self) -> float:
        """Model health: requests may wait this long without a batch finishing (default as
        :meth:`model_queue_age_bound_s`; a full batch takes well under a second on a GPU)."""
        v = self.model.max_batch_stall_s
        return v if v is not None else 2 * self.deadline.default_bound_ms / 1000.0

    def recipe(self, name: str) -> RecipeSettings:
        return self.recipes.get(name, self.default_recipe)

    def max_ongoing_requests(self) -> int:
        """Model replica admission, in handle calls: room for the running batch plus
        ``queue_batches`` more even when every call carries a single frame (a paced camera);
        calls of ``request_group`` frames only make the admitted backlog deeper."""
        return self.tuning.max_batch_size * (1 + self.model.queue_batches)

    def target_ongoing_requests(self) -> float:
        """Autoscaling target, in handle calls: one running and one queued batch per replica."""
        a = self.model.autoscaling
        if a is not None and a.target_ongoing_requests is not None:
            return a.target_ongoing_requests
        return max(1.0, 2 * self.tuning.max_batch_size / self.ingress.request_group)


def load_config(path: str | Path | None = None, **overrides: Any) -> ServeAppConfig:
    """Config from an optional YAML file, then keyword overrides (top-level fields)."""
    return load_settings(ServeAppConfig, path, **overrides)
