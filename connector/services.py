"""Everything a process needs, built once from Settings: store, queue, helpdesks, mappings, router."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from connector.config import load_config
from connector.corrections import Reconciler
from connector.mappings import MappingError, PlatformMapping, missing_groups, resolve_dir
from connector.model_keeper import ModelKeeper
from connector.queue import Queue, RetryPolicy
from connector.router import Router
from connector.settings import Settings
from connector.store import Store, StoreUnavailable
from connector.store.events import CHANNEL
from connector.tokens import DbVault
from connector.worker import Worker, WorkerPool
from platforms import PLATFORMS, NotConfigured, Platform

log = logging.getLogger(__name__)

CONFIG_POLL_SECONDS = 1.0  # how often a process asks the database for a new configuration version
# How often a worker process looks whether the active model still fits the taxonomy (besides right after an
# edit): a training that failed, or whose process died, is taken up again.
MODEL_CHECK_SECONDS = 60.0


class Services:
    """The parts of Deskroute, wired together.

    Args:
        platforms: adapters to use instead of building them from settings (tests, simulators).
    """

    def __init__(self, settings: Settings, *, platforms: dict[str, Platform] | None = None,
                 clock: Callable[[], float] | None = None):
        self.settings = settings
        self.store = Store(settings.database_url, clock=clock)
        self.clock = self.store.clock  # None: real time, as every machine of the install agrees on it
        self.store.migrate()
        self.queue = Queue(self.store, lease_seconds=settings.deskroute_lease_seconds, policy=RetryPolicy(
            max_attempts=settings.deskroute_max_attempts, base_seconds=settings.deskroute_retry_base_seconds,
            max_seconds=settings.deskroute_retry_max_seconds))
        self.mappings_dir = resolve_dir(settings.deskroute_mappings_dir)  # the defaults, until an edit is stored
        self._fingerprint = self._config_fingerprint()
        self._model_check_due = True  # a worker's first job looks whether the model fits (a deploy may change it)
        self._monotonic = time.monotonic
        self._model_checked = self._monotonic()
        self.model_keeper = ModelKeeper(self.store, settings, self.live_categories)
        # The live configuration's version in the database; None while the files in mappings_dir are live.
        self.config_version, self.taxonomy, mappings = load_config(self.store, self.mappings_dir)
        self._config_checked = self._monotonic()
        self.mappings: dict[str, PlatformMapping] = mappings
        self.unconfigured: dict[str, list[str]] = {}
        # Settings given but refused, and why (an API token after Zendesk switched them off).
        self.refused: dict[str, str] = {}
        if platforms is None:
            platforms = {}
            for name, cls in PLATFORMS.items():
                extras = {"vault": self.token_vault(name)} if cls.uses_token_vault else {}
                try:
                    platforms[name] = cls.from_settings(settings, **extras)
                except NotConfigured as exc:
                    self.unconfigured[name] = exc.missing
                    if exc.reason:
                        self.refused[name] = exc.reason
        self.platforms = platforms
        self.router = Router(store=self.store, taxonomy=self.taxonomy, mappings=self.mappings,
                             threshold=settings.deskroute_confidence_threshold, llm=self._make_llm)
        self.reconciler = Reconciler(store=self.store, platforms=self.platforms, mappings=self.mappings,
                                     keep_text=settings.deskroute_corrections_keep_text, clock=self.clock,
                                     keep_unrouted=self.keeps_unrouted)
        self.pool: WorkerPool | None = None

    @property
    def keeps_unrouted(self) -> bool:
        """Whether tickets no category took are kept for taxonomy suggestions: an install that keeps no
        corrected ticket's text keeps none of these either."""
        return self.settings.deskroute_suggestions and self.settings.deskroute_corrections_keep_text

    def token_vault(self, platform: str) -> DbVault:
        """Where this helpdesk's OAuth token (Zendesk), encrypted, and its auth failures (any helpdesk) are kept,
        for every process of the install."""
        s = self.settings
        return DbVault(self.store, platform, secret_key=s.deskroute_secret_key.get_secret_value(),
                       client_secret=s.zendesk_oauth_client_secret.get_secret_value())

    def _config_fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        files = sorted(self.mappings_dir.glob("*.yaml"))
        return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)

    def reload_config(self, *, force: bool = False) -> bool:
        """Pick up a new configuration version stored by any process (or, while none is stored, edits
        to the files in mappings_dir); True if anything changed.

        Looks at most once every CONFIG_POLL_SECONDS, unless `force` (a worker about to classify a new
        ticket, an admin page that just saved). An edit that doesn't validate is logged and ignored: the
        running configuration stays.
        """
        now = self._monotonic()
        if not force and now - self._config_checked < CONFIG_POLL_SECONDS:
            return False
        self._config_checked = now
        try:
            version = self.store.configs.latest_version()
        except StoreUnavailable as exc:
            log.warning("can't check for a new configuration; keeping the running one", extra={"error": str(exc)})
            return False
        if version is None:  # the files rule: hand edits count, as before the first stored version
            fingerprint = self._config_fingerprint()
            if self.config_version is None and fingerprint == self._fingerprint:
                return False
            self._fingerprint = fingerprint
        elif version == self.config_version:
            return False
        try:
            loaded, taxonomy, mappings = load_config(self.store, self.mappings_dir)
        except StoreUnavailable as exc:  # not seen yet: the next look tries again
            log.warning("can't read the new configuration; keeping the running one", extra={"error": str(exc)})
            return False
        except MappingError as exc:
            self.config_version = version  # reported once, not at every look
            log.error("edited configuration is invalid; keeping the running one",
                      extra={"error": str(exc), "version": version})
            return False
        self.config_version = loaded
        self.taxonomy = taxonomy
        self.mappings.update(mappings)  # every helpdesk's key stays: a decide() running meanwhile finds its own
        self._model_check_due = True  # for the worker, whichever thread or view noticed the edit
        self.router.reconfigure(taxonomy)
        log.info("configuration reloaded", extra={"taxonomy": taxonomy.fingerprint, "version": self.config_version})
        return True

    def live_categories(self) -> list[str]:
        """The categories of the configuration live in the database now (not only as this process last saw it)."""
        self.reload_config(force=True)
        return list(self.taxonomy.categories)

    def _reload_before_classifying(self) -> None:
        self.reload_config(force=True)

    def _before_job(self) -> None:
        self.reload_config()
        # After an edit seen here or by an admin page of this process (a new category needs a new model), and
        # once a minute: trained in the background, while the workers route with the model they have.
        if self._model_check_due or self._monotonic() - self._model_checked >= MODEL_CHECK_SECONDS:
            self._model_check_due = False
            self._model_checked = self._monotonic()
            try:
                self.model_keeper.check(self.taxonomy)
            except StoreUnavailable as exc:
                log.warning("can't check the model against the taxonomy", extra={"error": str(exc)})

    def _make_llm(self) -> Any:
        from connector.classify.llm import LLMTier  # the anthropic SDK: only processes that classify load it

        return LLMTier.from_settings(self.settings, self.taxonomy)

    def report_platforms(self) -> None:
        """Say once, at startup, which helpdesks are on."""
        for name in PLATFORMS:
            if name in self.platforms:
                log.info("helpdesk configured", extra={"platform": name})
            else:
                log.warning("helpdesk not configured; its webhook answers 404",
                            extra={"platform": name, "missing": ",".join(self.unconfigured.get(name, [])),
                                   "refused": self.refused.get(name, "")})

    def make_worker(self) -> Worker:
        """A worker over these services."""
        s = self.settings
        return Worker(queue=self.queue, store=self.store, router=self.router, platforms=self.platforms,
                      shadow=s.deskroute_shadow, clock=self.clock, reconciler=self.reconciler,
                      before_job=self._before_job,
                      # One indexed query per new ticket: the ticket after an admin's edit is routed by
                      # the edit, on whichever machine it lands. (Idle polls look once a second.)
                      before_classify=self._reload_before_classifying, keep_unrouted=self.keeps_unrouted,
                      distill_min_confidence=s.deskroute_distill_min_confidence if s.deskroute_distill else None)

    def start_workers(self, *, first_model_in_background: bool = False) -> WorkerPool:
        """Train a first model if there is none (quick: the taxonomy's examples), then start the worker threads.
        With `first_model_in_background` (serve) this happens on a thread, so the web app answers webhooks
        meanwhile: they wait in the queue, not at a closed port. A model that no longer fits the taxonomy is
        replaced in the background (ModelKeeper)."""
        pool = self.pool = WorkerPool(self.make_worker, threads=self.settings.deskroute_worker_threads,
                                      poll_seconds=self.settings.deskroute_poll_seconds)
        if self.store.models.active_version() is not None:
            pool.start()
        elif first_model_in_background:
            threading.Thread(target=self._first_model_then, args=(pool,), kwargs={"swallow_errors": True},
                             name="first-model", daemon=True).start()
        else:
            self._first_model_then(pool, swallow_errors=False)
        threading.Thread(target=self.check_groups, name="group-check", daemon=True).start()
        self.store.start_checkpointer()
        # PostgreSQL: a new event anywhere wakes these threads at once; they still poll, in case.
        self.store.db.listen(CHANNEL, self.pool.wake, self.pool.stop_event)
        return self.pool

    def _first_model_then(self, pool: WorkerPool, *, swallow_errors: bool) -> None:
        """Train the first model under the install's training lease (the admin UI says "training"; two processes
        starting together train it once: the other waits for it), then start the workers."""
        from connector.feedback import ensure_model  # scikit-learn: the web process never needs it
        from connector.model_keeper import Lease

        try:
            while self.store.models.active_version() is None:
                lease = Lease.take(self.store, self.model_keeper.owner)
                if lease is None:  # another process trains it; if it dies, its lease runs out and we take over
                    if pool.stop_event.wait(2.0):
                        return
                    continue
                with lease:
                    log.info("training the first local model")
                    lost = lease.lost  # another process took the lease over: what we trained must not activate
                    ensure_model(self.store, self.taxonomy, self.settings, may_activate=lambda: not lost.is_set())  # noqa: B023
        except Exception:
            if not swallow_errors:
                raise
            # Rules, Claude and triage still route; a worker's model check tries again within a minute.
            log.exception("couldn't train the first local model; workers start without one")
        pool.start()

    def check_groups(self) -> None:
        """Log, at startup, each mapped group the helpdesk doesn't have (doctor's check, for whoever never runs
        it): a ticket routed to one is refused and falls back to triage, or is dead-lettered if triage's is."""
        for name, platform in self.platforms.items():
            try:
                groups = {group.id for group in platform.list_groups()}
            except Exception as exc:  # noqa: BLE001 - a check at startup never stops the workers
                log.warning("couldn't check the mapped groups", extra={"platform": name, "error": type(exc).__name__})
                continue
            for key, group_id in missing_groups(self.mappings[name], groups):
                outcome = "are dead-lettered" if key == "triage" else "fall back to triage"
                log.error(f"mapped group is not a group in the helpdesk: tickets routed there {outcome}; "
                          "`deskroute doctor` lists the groups to pick from",
                          extra={"platform": name, "route": key, "group_id": group_id})

    def wake(self) -> None:
        """Tell this process's workers (if any) that an event was queued."""
        if self.pool is not None:
            self.pool.wake()
