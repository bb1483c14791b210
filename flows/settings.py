"""The one settings object. Values come from the environment (`FOLEY_*`) or a `.env` file;
nothing else in foleyflow reads `os.environ` for configuration."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """foleyflow configuration. The defaults are the embedded mode: everything under `.foley/`."""

    model_config = SettingsConfigDict(env_prefix="FOLEY_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".foley"), description="Working folder of the embedded mode.")
    db_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite under home.")
    store_url: str | None = Field(None, description="Artifact store; default a folder under home.")
    library: str = Field("kit", description="Sound library the sampler draws from.")
    workers: int = Field(2, description="Shots processed at once in a pass.")

    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.home / 'foley.db').resolve()}"

    def resolved_store_url(self) -> str:
        return self.store_url or str((self.home / "store").resolve())

    def configure_runtime(self) -> None:
        """Point this process's tasks at the configured database and store."""
        from tasks import runtime

        runtime.configure(self.resolved_db_url(), self.resolved_store_url())


def get_settings() -> Settings:
    return Settings()
