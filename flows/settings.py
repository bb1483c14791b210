"""The one settings object. Values come from the environment (`FOLEY_*`, plus the standard
`AWS_*` variables for an S3 store) or a `.env` file; nothing else in foleyflow reads
`os.environ` for configuration."""
from __future__ import annotations

import contextlib
import os
import socket
import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.engine import RetryPolicy, set_retry_policy
from tasks.store import S3Config


class Settings(BaseSettings):
    """foleyflow configuration. The defaults are the embedded mode: everything under `.foley/`."""

    model_config = SettingsConfigDict(env_prefix="FOLEY_", env_file=".env", extra="ignore",
                                      validate_by_name=True, validate_by_alias=True)

    home: Path = Field(Path(".foley"), description="Working folder of the embedded mode.")
    db_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite under home.")
    store_url: str | None = Field(
        None, description="Artifact store: a folder, file:// or s3://bucket/prefix; "
        "default a folder under home.")
    library: str = Field("kit", description="Sound library the sampler draws from.")
    workers: int = Field(2, ge=1, description="Shots processed at once in a pass.")

    # The review app (`foley review serve`).
    review_url: str = Field("http://127.0.0.1:8765", description="Where people reach the "
                            "review app; links in Prefect artifacts point here.")
    review_session_hours: float = Field(12.0, gt=0, description="How long a sign-in lasts.")
    review_login_limit: int = Field(5, ge=1, description="Failed sign-ins per user name (and "
                                    "4x that per client address) allowed per window.")
    review_login_window_s: float = Field(900.0, gt=0, description="The sign-in limit's window.")
    review_apply_interval_s: float = Field(30.0, gt=0, description="How often the app looks "
                                           "for decisions whose synthesis is still to run.")

    # How long a stage waits out a database or S3 server that went away before the pass fails
    # with a clear message: `retry_attempts` tries, backing off 0.5 s, 1 s, 2 s, ... (each at
    # most `retry_max_delay_s`); the defaults wait 15.5 s in all, for both services.
    retry_attempts: int = Field(6, ge=1, le=50, description="Tries per database / S3 operation.")
    retry_max_delay_s: float = Field(8.0, gt=0, description="Longest wait between two tries (s).")

    # S3 / MinIO (studio mode): the standard AWS variables, so one environment serves every tool.
    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3 endpoint, e.g. http://minio:9000; unset = AWS.")
    s3_access_key_id: SecretStr | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    s3_secret_access_key: SecretStr | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY")
    s3_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION",
                                                                      "AWS_DEFAULT_REGION"))
    s3_ca_bundle: Path | None = Field(None, validation_alias="AWS_CA_BUNDLE",
                                      description="CA certificates for an https endpoint.")
    s3_cache_dir: Path | None = Field(
        None, description="Where S3 artifacts are downloaded to; default <home>/cache/s3.")
    s3_part_size_mb: int = Field(16, ge=5, le=5120, description="Multipart part size (MiB).")
    # How long an S3 call waits (docs/OPERATIONS.md, "What an S3 store outage costs").
    s3_connect_timeout_s: float = Field(5.0, gt=0, description="Longest wait to connect to "
                                        "the S3 endpoint (s).")
    s3_head_timeout_s: float = Field(15.0, gt=0, description="Longest wait for the answer to "
                                     "a HEAD, which starts every store call (s); at most "
                                     "FOLEY_S3_READ_TIMEOUT_S.")
    s3_read_timeout_s: float = Field(60.0, gt=0, description="Longest silence of one socket "
                                     "read in a transfer (s): a slow transfer that keeps "
                                     "moving never times out.")
    s3_hung_attempts: int = Field(2, ge=1, le=50, description="Tries per store call against "
                                  "an endpoint that takes the connection and never answers "
                                  "(read timeouts); at most FOLEY_RETRY_ATTEMPTS.")

    # Overnight passes (`foley serve`, the `foley-nightly` deployment; docs/OPERATIONS.md).
    inbox: str | None = Field(None, description="Where reels land: a folder or "
                              "s3://bucket/prefix; each timeline file there (with the media it "
                              "names) is a reel, processed once per version (content hash).")
    inbox_settle_s: float = Field(120.0, ge=0, description="A reel is taken only once none of "
                                  "its files changed for this long (still being copied).")
    deliveries: Path | None = Field(None, description="Delivery root of the nightly pass: "
                                    "each reel goes to <deliveries>/<reel>; default "
                                    "<home>/deliveries.")
    nightly_cron: str = Field("0 1 * * *", description="When the nightly pass runs (cron, "
                              "in `timezone`); default 01:00.")
    timezone: str | None = Field(
        None, validation_alias=AliasChoices("FOLEY_TIMEZONE", "TZ"),
        description="IANA zone of the nightly schedule, e.g. Europe/London; default the "
        "machine's local zone.")
    nightly_approve: Literal["auto", "queue"] = Field(
        "queue", description="Approval in the nightly pass: queue (supervisors decide in the "
        "morning) or auto (policy:auto approves the predictions that meet "
        "nightly_approve_threshold).")
    nightly_approve_threshold: float = Field(
        0.0, ge=0.0, le=1.0, description="With FOLEY_NIGHTLY_APPROVE=auto: the policy's "
        "threshold, as `foley run --approve-threshold` (every event's confidence at least "
        "this, the model's doubt at most 1 − this); 0 approves every prediction.")
    nightly_envelope: Literal["baseline", "model"] = Field(
        "baseline", description="Envelope estimator of the nightly pass.")
    envelope_checkpoint: str | None = Field(
        None, description="RMS-Mapper checkpoint of every pass run with the model estimator "
        "(default: the shipped one, models/checkpoints/rms_mapper_tiny.safetensors) — e.g. "
        "one whose contact scorer was refitted on your own reels (`foley train calibrate "
        "CHECKPOINT data/reels --out mine.safetensors`). Workers must see the same path.")
    nightly_backend: Literal["sampler", "diffusion"] = Field(
        "sampler", description="Synthesis backend of the nightly pass (tasks.synth).")
    webhook_url: str | None = Field(None, description="POSTed the morning summary as JSON "
                                    "(Slack / Teams / Mattermost incoming webhook or your own).")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Webhook request timeout.")

    # Workers and scale-out.
    task_runner: Literal["thread", "dask"] = Field(
        "thread", description="How a pass runs its shots in parallel: thread (FOLEY_WORKERS "
        "threads in the flow's process) or dask (prefect-dask; FOLEY_DASK_ADDRESS).")
    dask_address: str | None = Field(None, description="Scheduler of a Dask cluster, e.g. "
                                     "tcp://render01:8786; unset = a local cluster of "
                                     "FOLEY_WORKERS processes.")
    gpu_slots: int = Field(1, ge=1, description="GPU-tagged tasks (envelope model inference, "
                           "diffusion synthesis) running at once across the Prefect server: "
                           "the number of GPUs.")
    shots_per_run: int = Field(0, ge=0, description="0: a pass works its shots itself. N: it "
                               "hands them, N per flow run, to the `foley-shots` deployment, "
                               "so every worker on the pool takes a share of one reel.")
    shots_deployment: str = Field("foley-shots/shots", description="The deployment that "
                                  "works a batch of shots (FOLEY_SHOTS_PER_RUN > 0).")
    shots_timeout_s: float = Field(6 * 3600.0, gt=0, description="How long a pass waits for "
                                   "its shot runs before working the rest itself.")
    task_retries: int = Field(2, ge=0, le=10, description="Retries of a shot's stage after a "
                              "transient failure (bad media is not retried).")
    task_retry_delay_s: float = Field(10.0, ge=0, description="Wait before such a retry.")
    worker_name: str | None = Field(None, description="This process's name in shot-run "
                                    "records; default host:pid.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value:
            try:
                zoneinfo.ZoneInfo(value.lstrip(":"))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: use an IANA name such as "
                                 "Europe/London or America/Los_Angeles") from None
            return value.lstrip(":")
        return None

    def resolved_timezone(self) -> str:
        """The schedule's zone: the setting, else the machine's (/etc/localtime), else UTC."""
        if self.timezone:
            return self.timezone
        local = Path("/etc/localtime")
        if local.is_symlink():
            name = str(local.resolve()).partition("zoneinfo/")[2]
            if name:
                return name
        return "UTC"

    def resolved_deliveries(self) -> Path:
        return (self.deliveries or self.home / "deliveries").resolve()

    def resolved_worker_name(self) -> str:
        return self.worker_name or f"{socket.gethostname()}:{os.getpid()}"

    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.home / 'foley.db').resolve()}"

    def resolved_store_url(self) -> str:
        return self.store_url or str((self.home / "store").resolve())

    def s3_config(self) -> S3Config | None:
        """Connection settings for an s3:// store (None for a folder store)."""
        if not self.resolved_store_url().startswith("s3://"):
            return None
        return self.s3_connection()

    def s3_connection(self) -> S3Config:
        """The S3 endpoint and keys (the AWS_* variables), for the store and an s3:// inbox."""
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            raise ValueError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the S3 "
                             "store (or neither, for anonymous access)")
        from tasks.store_s3 import split_endpoint

        split_endpoint(self.s3_endpoint_url)  # a malformed endpoint fails here, named
        return S3Config(
            endpoint=self.s3_endpoint_url,
            access_key=self.s3_access_key_id.get_secret_value() if self.s3_access_key_id else None,
            secret_key=self.s3_secret_access_key,
            region=self.s3_region,
            ca_bundle=self.s3_ca_bundle,
            cache_dir=(self.s3_cache_dir or self.home / "cache" / "s3").resolve(),
            part_size=self.s3_part_size_mb << 20,
            connect_timeout_s=self.s3_connect_timeout_s,
            read_timeout_s=self.s3_read_timeout_s,
            head_timeout_s=min(self.s3_head_timeout_s, self.s3_read_timeout_s),
            attempts=self.retry_attempts,
            hung_attempts=min(self.s3_hung_attempts, self.retry_attempts),
            backoff_max_s=self.retry_max_delay_s,
        )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.retry_attempts, max_delay_s=self.retry_max_delay_s)

    def configure_runtime(self) -> None:
        """Point this process's tasks at the configured database and store."""
        from tasks import runtime

        set_retry_policy(self.retry_policy())
        runtime.configure(self.resolved_db_url(), self.resolved_store_url(), s3=self.s3_config())


def setting_error(exc: BaseException) -> str | None:
    """The one line a command prints when a setting (a FOLEY_* / AWS_* variable, .env, or a
    --url given for one) is unusable — a value of the wrong type, a database URL SQLAlchemy
    cannot read or has no driver for, a store URL of another scheme, a home folder that
    cannot be made — else None. Follows the exception's causes."""
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from tasks.store import StoreURLError

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ValidationError) and e.title == Settings.__name__:
            parts = []
            for err in e.errors():
                field_name = str(err["loc"][0]) if err["loc"] else "?"
                info = Settings.model_fields.get(field_name)
                alias = getattr(info, "validation_alias", None) if info else None
                names = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str)
                                                             else [])
                var = str(names[0]) if names else f"FOLEY_{field_name.upper()}"
                parts.append(f"{var}={err.get('input')!r}: {err['msg']}")
            return "unusable setting — " + "; ".join(parts) + " (fix the variable or .env)"
        if isinstance(e, (NoSuchModuleError, ArgumentError)):
            reason = " ".join(str(e).split())
            return (f"the database URL cannot be used ({reason}): set FOLEY_DB_URL (or --url) to "
                    "postgresql+psycopg://user@host/db, or unset it for the embedded SQLite")
        if isinstance(e, StoreURLError):
            return f"{e} (FOLEY_STORE_URL)"
        # A copy's error names its source and its destination (`filename2`): the destination
        # is what was being written, so a full delivery folder is not blamed on the store's home.
        target_name = e.filename2 or e.filename if isinstance(e, OSError) else None
        if target_name:
            with contextlib.suppress(Exception):  # settings unreadable too: no home to name
                home = Settings().home.resolve()
                target = Path(os.fsdecode(target_name)).resolve()
                if target == home or home in target.parents:
                    return (f"FOLEY_HOME={home} cannot be used: {e.strerror} ({target_name}); "
                            "point it at a folder you can write")
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


def get_settings() -> Settings:
    return Settings()
