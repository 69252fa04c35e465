"""Keeps the active local model fitting the taxonomy, without holding up the routing.

An admin's new category needs a new model, and on a large feedback dataset training takes minutes
(docs/local-model.md: 11 on 20,000 long tickets). A worker that trained before its next job would
route nothing meanwhile, and every worker of the install would train the same model. Instead one
process trains, in a thread of its own, under a lease in the database; every worker keeps routing
with the model it has (a category that model doesn't know is simply never its answer, and one it
knows but the taxonomy dropped goes to triage) and picks the new model up when it is activated.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from connector.mappings import Taxonomy
from connector.store import Store

log = logging.getLogger(__name__)

TRAIN_LOCK = "model.train"
LEASE_SECONDS = 120.0  # renewed every third of it while training; a trainer that dies frees it this fast


def start_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="model-trainer", daemon=True).start()


class ModelKeeper:
    """One per process: `check` (cheap) starts a training when the active model doesn't fit the taxonomy."""

    def __init__(self, store: Store, settings: Any, *, spawn: Callable[[Callable[[], None]], None] = start_thread):
        self.store = store
        self.settings = settings
        self.owner = f"trainer-{uuid.uuid4().hex[:12]}"
        self._spawn = spawn
        self._lock = threading.Lock()
        self._busy = False

    def fits(self, taxonomy: Taxonomy) -> bool:
        from connector.feedback import fits_taxonomy

        version = self.store.models.active_version()
        return version is not None and fits_taxonomy(self.store.models.info(version).labels, taxonomy)

    def check(self, taxonomy: Taxonomy) -> bool:
        """Start training in the background if the active model doesn't fit `taxonomy` and this process isn't
        already at it; True if it started."""
        if self.fits(taxonomy):
            return False
        with self._lock:
            if self._busy:
                return False
            self._busy = True
        try:
            self._spawn(lambda: self._train(taxonomy))
        except Exception:
            with self._lock:
                self._busy = False
            raise
        return True

    def _train(self, taxonomy: Taxonomy) -> None:
        from connector.feedback import ensure_model  # scikit-learn: only processes that train load it

        try:
            with training_lease(self.store, self.owner) as held:
                if not held:
                    log.info("another process is training the model; routing with the current one meanwhile")
                    return
                started = time.monotonic()
                version = ensure_model(self.store, taxonomy, self.settings)  # looks again, under the lease
                log.info("model fits the taxonomy", extra={"model_version": version,
                                                           "seconds": round(time.monotonic() - started, 1)})
        except Exception:  # the next check (a minute on) tries again; routing goes on meanwhile
            log.exception("training a model for the edited taxonomy failed")
        finally:
            with self._lock:
                self._busy = False


@contextmanager
def training_lease(store: Store, owner: str) -> Iterator[bool]:
    """Hold the install's training lease while the block runs (True), renewed in the background; False, at
    once, while another process holds it. The keeper's trainings and the scheduled retrain both take it, so
    two trainings never share a worker's cores, nor activate models for two taxonomies in turn."""
    if not store.auth.try_lock(TRAIN_LOCK, owner, until=time.time() + LEASE_SECONDS, now=time.time()):
        yield False
        return
    done = threading.Event()
    threading.Thread(target=_renew, args=(store, owner, done), name="training-lease", daemon=True).start()
    try:
        yield True
    finally:
        done.set()
        store.auth.unlock(TRAIN_LOCK, owner)


def _renew(store: Store, owner: str, done: threading.Event) -> None:
    while not done.wait(LEASE_SECONDS / 3):
        try:
            store.auth.try_lock(TRAIN_LOCK, owner, until=time.time() + LEASE_SECONDS, now=time.time())
        except Exception as exc:  # noqa: BLE001 - the next renewal tries again
            log.warning("couldn't renew the training lease", extra={"error": type(exc).__name__})
