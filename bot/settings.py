"""Settings, read once at the entry point from the environment and an optional `.env` file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigurationError


class Settings(BaseSettings):
    """Every setting of the bot. Only the two secrets are required."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_token: SecretStr
    evolink_api_key: SecretStr
    evolink_base_url: str = "https://api.evolink.ai"
    evolink_timeout: float = Field(default=30.0, gt=0)
    evolink_retry_attempts: int = Field(default=4, ge=1, le=10)
    evolink_retry_base_delay: float = Field(default=1.0, ge=0)
    evolink_retry_max_delay: float = Field(default=60.0, ge=0)
    database_path: Path = Path("data/imagine.sqlite3")
    discord_api_base_url: str | None = None
    discord_gateway_url: str | None = None
    imagine_model: str = "gpt-image-1.5"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    dev_guild_id: int | None = None
    message_content_intent: bool = False
    default_allowance: float = Field(default=20.0, ge=0, le=1_000_000)
    model_prices: str = ""
    progress_edit_interval: float = Field(default=3.0, gt=0)
    poll_min_interval: float = Field(default=1.0, gt=0)
    poll_max_interval: float = Field(default=30.0, gt=0)
    task_deadline: float = Field(default=900.0, gt=0)
    stall_timeout: float = Field(default=300.0, gt=0)
    max_result_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    public_base_url: str | None = None
    web_host: str = "0.0.0.0"  # noqa: S104 - the health and callback endpoint is meant to be reachable
    web_port: int | None = Field(default=None, ge=0, le=65535)
    callback_safety_interval: float = Field(default=30.0, gt=0)

    @field_validator("discord_token", "evolink_api_key")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("model_prices")
    @classmethod
    def _prices_are_json(cls, value: str) -> str:
        if value.strip():
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError("must be JSON") from exc
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _https_only(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("must be an https:// URL (EvoLink only calls back over HTTPS)")
        return value.rstrip("/")


def load_settings() -> Settings:
    """Read the settings, turning a missing or malformed one into one clear line."""
    try:
        return Settings()  # type: ignore[call-arg]  # pydantic-settings fills the fields
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        problem = "is missing" if first["type"] == "missing" else f"is invalid: {first['msg']}"
        raise ConfigurationError(f"{name} {problem}") from None
