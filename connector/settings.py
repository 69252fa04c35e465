"""Every setting Deskroute reads, with its default and help text.

Values come from an explicit argument, then the environment, then `.env`, then the default.
Field names are the lower-cased environment variable names (`DATABASE_URL` -> `database_url`).
README's settings table is checked against this model by tests/test_docs.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deskroute configuration."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- storage -------------------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///deskroute.db",
        description="Where events, decisions, models and configuration are stored: `sqlite:///relative.db` or "
        "`sqlite:////absolute/path.db` on one machine, `postgresql://user:password@host:5432/db` for several.",
    )
    # --- Zendesk ---------------------------------------------------------------------------
    zendesk_subdomain: str = Field("", description="Your Zendesk subdomain: `acme` for acme.zendesk.com.")
    zendesk_oauth_client_id: str = Field(
        "", description="Identifier of Deskroute's OAuth client (Admin Center > Apps and integrations > APIs > "
        "OAuth clients).")
    zendesk_oauth_client_secret: SecretStr = Field(
        SecretStr(""), description="That client's secret (a confidential client): Deskroute gets its tokens with the "
        "client-credentials grant. Leave empty to use Connect Zendesk in the admin UI instead.")
    zendesk_base_url: str = Field(
        "", description="Overrides `https://<subdomain>.zendesk.com` for OAuth and API calls alike.")
    zendesk_email: str = Field("", description="Legacy, until 30 April 2027: email of the agent whose API token "
                               "Deskroute uses.")
    zendesk_api_token: SecretStr = Field(SecretStr(""), description="Legacy: a Zendesk API token. Zendesk switches "
                                         "every API token off on 30 April 2027; use OAuth.")
    zendesk_webhook_secret: SecretStr = Field(SecretStr(""), description="Signing secret of the Deskroute "
                                              "webhook in Zendesk, used exactly as shown.")
    # --- Freshdesk -------------------------------------------------------------------------
    freshdesk_domain: str = Field("", description="Your Freshdesk domain: `acme` or `acme.freshdesk.com`.")
    freshdesk_api_key: SecretStr = Field(SecretStr(""), description="API key of the agent Deskroute acts as "
                                         "(Profile settings > View API key).")
    freshdesk_webhook_secret: SecretStr = Field(SecretStr(""), description="Shared secret the automation rules "
                                                "send in the X-Deskroute-Token header.")
    freshdesk_base_url: str = Field("", description="Overrides `https://<domain>.freshdesk.com`, e.g. "
                                    "`http://127.0.0.1:9000` for a loopback fake.")
    # --- Claude (the LLM tier) ---------------------------------------------------------------
    anthropic_api_key: SecretStr = Field(SecretStr(""), description="Turns the Claude tier on. Without it, tickets "
                                         "the rules and the local model can't place go to triage.")
    deskroute_fast_model: str = Field("claude-haiku-4-5", description="Model asked first.")
    deskroute_strong_model: str = Field("claude-sonnet-4-6", description="Model asked when the fast model's "
                                        "confidence in a field is below its threshold.")
    deskroute_llm_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"category": 0.8, "priority": 0.5},
        description="JSON: the confidence each field of the fast model's answer needs before the strong model is "
        "skipped. Fields: category, priority, sentiment, language; `category.<name>` sets one category's bar.",
    )
    deskroute_llm_strong_for_other_languages: bool = Field(
        True, description="Send tickets that aren't in one of the taxonomy's `languages` straight to the strong model."
    )
    deskroute_llm_timeout: float = Field(15.0, gt=0, description="Timeout in seconds for one Claude request.")
    deskroute_llm_budget_seconds: float = Field(
        40.0, gt=0, description="Total time for Claude calls on one ticket, retries included; then triage."
    )
    deskroute_llm_max_tokens: int = Field(400, gt=0, description="Longest answer a Claude call may write.")
    deskroute_llm_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_write": 1.25, "cache_read": 0.10},
            "claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30},
        },
        description="JSON: USD per million tokens, per model (input, output, cache_write, cache_read), "
        "for the cost estimates.",
    )
    deskroute_distill: bool = Field(
        True, description="Keep the redacted text of confident Claude decisions, so that those not re-routed "
        "become training examples for the local model."
    )
    deskroute_distill_min_confidence: float = Field(
        0.9, ge=0, le=1, description="Claude confidence a decision needs to become a training example."
    )
    deskroute_distill_after_hours: float = Field(
        72.0, ge=0, description="Hours without a re-route before a Claude decision becomes a training example."
    )
    # --- classification --------------------------------------------------------------------
    deskroute_confidence_threshold: float = Field(
        0.75, ge=0.0, le=1.0,
        description="A tier decides only when its confidence is at least this; below it the ticket goes to triage.",
    )
    deskroute_mappings_dir: Path = Field(
        Path("mappings"),
        description="Folder holding taxonomy.yaml and one <platform>.yaml per helpdesk.",
    )
    deskroute_shadow: bool = Field(
        False, description="Classify and record every ticket, but never write to the helpdesk."
    )
    # --- corrections and learning -----------------------------------------------------------
    deskroute_corrections_keep_text: bool = Field(
        True, description="Keep each corrected ticket's redacted text with its correction (needed to learn from it)."
    )
    deskroute_reroute_window_hours: float = Field(
        72.0, gt=0, description="How long after routing the scheduled poll looks for re-routes a webhook missed."
    )
    deskroute_reroute_poll_minutes: float = Field(
        10.0, ge=0, description="How often that poll runs (0: never)."
    )
    deskroute_reroute_poll_batch: int = Field(
        50, ge=1, description="Tickets the poll checks per run, the least recently checked first."
    )
    deskroute_accuracy_hours: float = Field(
        48.0, gt=0, description="A routed ticket counts as right if no agent moves it within this many hours."
    )
    deskroute_embeddings: Literal["auto", "off"] = Field(
        "auto", description="Train the local model with sentence embeddings when the [embeddings] extra is installed"
        " (auto), or never (off). Read by embeddings.available(), also outside the app (train, eval, bench)."
    )
    deskroute_embedding_threads: int = Field(
        2, ge=1, description="CPU threads the embedding model may use per process."
    )
    deskroute_retention_days: int = Field(
        90, ge=0, description="Forget ticket text (distillation text, Claude's summary, reasons and note, imported "
        "history, tickets kept for suggestions) this many days after the decision; corrections keep their redacted "
        "text. 0: keep it."
    )
    deskroute_retrain_cron: str = Field(
        "0 3 * * *", description="When the local model retrains on the feedback dataset (crontab, UTC; empty: never)."
    )
    deskroute_suggestions: bool = Field(
        True, description="Keep the redacted text of tickets sent to triage (not by a guardrail) or moved by an agent "
        "to a group no category maps to, for the retention period, and cluster them into taxonomy suggestions. "
        "Nothing is kept when this or DESKROUTE_CORRECTIONS_KEEP_TEXT is off, and the daily purge forgets what was "
        "kept before."
    )
    deskroute_suggest_cron: str = Field(
        "0 5 * * mon", description="When taxonomy suggestions are computed (crontab, UTC, weekdays as crontab "
        "counts them: 0 or 7 is Sunday; empty: only by `deskroute suggest`)."
    )
    # --- webhook intake --------------------------------------------------------------------
    deskroute_max_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest webhook body accepted; bigger ones get 413."
    )
    deskroute_webhook_tolerance_seconds: int = Field(
        300, gt=0, description="How far a signed webhook's timestamp may be from now, either way."
    )
    # --- worker and queue ------------------------------------------------------------------
    deskroute_worker_threads: int = Field(1, ge=1, le=32, description="Events processed at once per worker process.")
    deskroute_poll_seconds: float = Field(
        0.25, gt=0,
        description="How often an idle worker looks for new events (webhooks in the same process wake it at once).",
    )
    deskroute_lease_seconds: int = Field(
        120, gt=0, description="How long a claimed event is reserved; a crashed worker's event is retried after this."
    )
    deskroute_max_attempts: int = Field(
        10, ge=1, description="Attempts before an event is dead-lettered."
    )
    deskroute_retry_base_seconds: float = Field(
        2.0, gt=0, description="First retry delay; doubles each attempt, with jitter."
    )
    deskroute_retry_max_seconds: float = Field(600.0, gt=0, description="Longest delay between two attempts.")
    deskroute_rate_limit_wait_seconds: float = Field(
        30.0, ge=0,
        description="Longest a single helpdesk call waits on 429 Retry-After before handing the event back to the "
        "queue for later.",
    )
    deskroute_http_timeout: float = Field(10.0, gt=0, description="Timeout in seconds for each helpdesk API request.")
    deskroute_scheduler: bool = Field(True, description="Run the scheduled jobs in `serve` and `worker`.")
    # --- admin UI --------------------------------------------------------------------------
    deskroute_admin_password: SecretStr = Field(SecretStr(""), description="Shared password of the admin UI at "
                                                "/admin (12 characters or more); without it only named users "
                                                "(`deskroute users`) sign in, and with neither the UI is off.")
    deskroute_secret_key: SecretStr = Field(SecretStr(""), description="Signs admin sessions and CSRF tokens, and "
                                            "encrypts stored OAuth tokens (at least 32 random characters; required "
                                            "for Connect Zendesk). Default for signing: a random key made once per "
                                            "install and kept in its database.")
    deskroute_public_url: str = Field("", description="Where browsers and helpdesks reach Deskroute, e.g. "
                                      "`https://deskroute.acme.com`; used for the OAuth redirect address. Default: "
                                      "the address the admin's browser used.")
    deskroute_trusted_proxies: int = Field(
        0, ge=0, le=5, description="Reverse proxies (or PaaS routers) in front of Deskroute whose X-Forwarded-For, "
        "-Proto and -Host to believe: the login throttle then counts each client, not the proxy, and OAuth "
        "redirects use the public address. 0: believe none.")
    deskroute_metrics_token: SecretStr = Field(
        SecretStr(""), description="When set, /metrics and /health's details need `Authorization: Bearer <token>`; "
        "/health without it says only ok or not.")
    deskroute_app_token: SecretStr = Field(
        SecretStr(""), description="Secret behind the helpdesk apps' tokens for /apps/api (32 characters or more; "
        "`deskroute app` generates one and prints each app's own token); without it the sidebar API is off.")
    deskroute_feedback_per_ticket_per_hour: int = Field(
        5, ge=1, description="Sidebar verdicts one ticket takes per hour, from all its agents together (each agent "
        "gives one per ticket); more are answered 429 with Retry-After.")
    deskroute_feedback_per_hour: int = Field(
        1000, ge=1, description="Sidebar verdicts the whole install takes per hour, from every agent and ticket: "
        "each sends a worker to fetch the ticket's text from the helpdesk, so this bounds what a leaked app token "
        "can spend of its API rate; more are answered 429 with Retry-After.")
    deskroute_secure_cookies: bool = Field(True, description="Send the admin session cookie over HTTPS only "
                                           "(browsers treat http://localhost as secure too).")
    # --- logging ---------------------------------------------------------------------------
    deskroute_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    deskroute_log_format: Literal["json", "text"] = Field(
        "json", description="`json` (one object a line, for log shippers) or `text`."
    )


def env_name(field_name: str) -> str:
    """The environment variable that sets a Settings field."""
    return field_name.upper()
