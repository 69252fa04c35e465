"""Keeps the active local model fitting the taxonomy, without holding up the routing.

An admin's new category needs a new model, and on a large feedback dataset training takes minutes
(docs/local-model.md: 11 on 20,000 long tickets). A worker that trained before its next job would
route nothing meanwhile, and every worker of the install would train the same model. Instead one
process trains, in a thread of its own, under a lease in the database; every worker keeps routing
with the model it has (a category that model doesn't know is simply never its answer, and one it
knows but the taxonomy dropped goes to triage) and picks the new model up when it is activated.
The training process's own workers share its cores meanwhile, so they route more slowly, not less.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from connector.mappings import Taxonomy, fits_taxonomy
from connector.store import RetrainRecord, Store

if TYPE_CHECKING:
    from connector.feedback import RetrainReport

log = logging.getLogger(__name__)

TRAIN_LOCK = "model.train"
# An admin's "Retrain now", for a worker to run: a web request can't wait minutes for a training (gunicorn would
# time it out), nor load scikit-learn. A request no worker takes up within a day lapses.
RETRAIN_REQUEST = "model.retrain.request"
REQUEST_SECONDS = 24 * 3600.0
LEASE_SECONDS = 120.0  # renewed every third of it while training; a trainer that dies frees it this fast
# A training still running after this may hang: its lease is no longer renewed, so another process can train
# (if it was only slow, it still activates its model when done; the other finds the model fits, or trains again).
MAX_TRAIN_SECONDS = 6 * 3600.0


_held: set[Lease] = set()  # this process's trainings under way
_held_lock = threading.Lock()


def give_up_leases() -> bool:
    """At shutdown: give up the training leases this process holds, so that another process (or this one,
    restarted) trains at once rather than after the lease runs out; True if a training was under way."""
    with _held_lock:
        held = list(_held)
    for lease in held:
        lease.lost.set()  # whatever it trains must not be activated now
        lease.__exit__(None, None, None)
    return bool(held)


class Lease:
    """The install's training lease, held by one process at a time (the keeper's trainings and the scheduled
    retrain both take it, so that two trainings never share a worker's cores, nor activate models for two
    taxonomies in turn). As a context manager: renewed in the background, then given up."""

    def __init__(self, store: Store, owner: str):
        self.store = store
        self.owner = owner
        self.lost = threading.Event()  # another process took it over: what was trained must not be activated
        self._done = threading.Event()
        self._lock = threading.Lock()  # a renewal and the release never cross: a late renewal would retake it
        self._released = False

    @classmethod
    def take(cls, store: Store, owner: str) -> Lease | None:
        """The lease, or None while another process holds it."""
        now = store.db.wall()
        if store.auth.try_lock(TRAIN_LOCK, owner, until=now + LEASE_SECONDS, now=now):
            return cls(store, owner)
        return None

    def __enter__(self) -> Lease:
        with _held_lock:
            _held.add(self)
        threading.Thread(target=self._renew, name="training-lease", daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._done.set()
        with _held_lock:
            _held.discard(self)
        with self._lock:
            if self._released:
                return
            self._released = True
            try:
                self.store.auth.unlock(TRAIN_LOCK, self.owner)
            except Exception as exc:  # noqa: BLE001 - it runs out on its own; the training's outcome matters more
                log.warning("couldn't give the training lease up", extra={"error": type(exc).__name__})

    def _renew(self) -> None:
        started = time.monotonic()
        while not self._done.wait(LEASE_SECONDS / 3):
            if time.monotonic() - started > MAX_TRAIN_SECONDS:
                log.error("a training has run for hours; no longer holding the lease, so another process can train")
                return
            with self._lock:
                if self._released:
                    return
                try:
                    now = self.store.db.wall()
                    taken = not self.store.auth.try_lock(TRAIN_LOCK, self.owner, until=now + LEASE_SECONDS, now=now)
                except Exception as exc:  # noqa: BLE001 - the next renewal tries again, within the lease
                    log.warning("couldn't renew the training lease", extra={"error": type(exc).__name__})
                    continue
            if taken:
                log.error("the training lease was taken by another process; this training won't be activated")
                self.lost.set()
                return


def request_retrain(store: Store, *, by: str) -> bool:
    """Ask the workers for the gated retrain (connector/feedback.py retrain); False if one is asked already."""
    now = store.db.wall()
    return store.auth.try_lock(RETRAIN_REQUEST, f"{by} {uuid.uuid4().hex[:8]}", until=now + REQUEST_SECONDS, now=now)


def requested_by(owner: str | None) -> str:
    """A retrain's trigger for the Retrains table: "admin" (the shared password), or "admin:NAME"."""
    who = (owner or "").split(" ")[0]
    return "admin" if who in ("", "admin") else f"admin:{who}"


def training_status(store: Store) -> str | None:
    """What the admin UI says of trainings: "training" (one runs now), "requested" (a retrain waits for a
    worker), or None."""
    now = store.db.wall()
    if store.auth.holder(TRAIN_LOCK, now=now):
        return "training"
    if store.auth.holder(RETRAIN_REQUEST, now=now):
        return "requested"
    return None


def still_current(lease: Lease, taxonomy: Taxonomy, live_categories: Callable[[], Collection[str]]
                  ) -> Callable[[], bool]:
    """Whether what was trained for `taxonomy` under `lease` may go live, asked once it is trained: the lease
    held throughout, and the live categories are still the ones it was trained for."""
    wanted = set(taxonomy.categories)
    return lambda: not lease.lost.is_set() and set(live_categories()) == wanted


def gated_retrain(store: Store, taxonomy: Taxonomy, settings: object, lease: Lease,
                  live_categories: Callable[[], Collection[str]], *, now: float, trigger: str,
                  may_promote: Callable[[], bool] = lambda: True) -> RetrainReport:
    """The gated retrain (connector/feedback.py retrain), run while the caller holds `lease`: its model is promoted
    only if `may_promote()` and still_current() say so once it is trained. What it did, failures included, is
    recorded for the Model page under `trigger` (schedule, admin or cli)."""
    from connector.feedback import retrain  # scikit-learn: only processes that train load it

    current = still_current(lease, taxonomy, live_categories)
    started = store.clock()
    try:
        report = retrain(store, taxonomy, settings, now=now, may_promote=lambda: may_promote() and current())
    except Exception as exc:
        record_retrain(store, RetrainRecord(started, store.clock(), trigger, "failed",
                                            f"{type(exc).__name__} (the worker's log has the details)"))
        raise
    trained = report.version is not None
    record_retrain(store, RetrainRecord(started, store.clock(), trigger, report.outcome, report.reason,
                                        version=report.version, n_holdout=report.n_holdout,
                                        candidate_f1=report.candidate_f1 if trained else None,
                                        current_f1=report.current_f1))
    return report


def record_retrain(store: Store, record: RetrainRecord) -> None:
    """Keep what a retrain did for the Model page; a database hiccup here never fails the retrain."""
    try:
        store.retrains.record(record)
    except Exception as exc:  # noqa: BLE001 - the model (if any) is saved; only the page's line is missing
        log.warning("couldn't record the retrain's outcome", extra={"error": type(exc).__name__})


def start_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="model-trainer", daemon=True).start()


class ModelKeeper:
    """One per process: `check` (cheap) starts a training when the active model doesn't fit the taxonomy.

    live_categories: the categories live now, asked once a model is trained: one trained for categories
        edited meanwhile is kept inactive (the next check trains for the new ones).
    """

    def __init__(self, store: Store, settings: object, live_categories: Callable[[], Collection[str]], *,
                 spawn: Callable[[Callable[[], None]], None] | None = None):
        self.store = store
        self.settings = settings
        self.owner = f"trainer-{uuid.uuid4().hex[:12]}"
        self._live = live_categories
        self._spawn = spawn  # None: start_thread (looked up when used, so tests can run trainings inline)
        self._lock = threading.Lock()
        self._busy = False

    def fits(self, taxonomy: Taxonomy) -> bool:
        version = self.store.models.active_version()
        return version is not None and fits_taxonomy(self.store.models.info(version).labels, taxonomy)

    def check(self, taxonomy: Taxonomy) -> bool:
        """Start training in the background if the active model doesn't fit `taxonomy`, or an admin asked for a
        retrain, and neither this process nor another is training already; True if it started."""
        if self.fits(taxonomy):
            if not self.store.auth.holder(RETRAIN_REQUEST, now=self.store.db.wall()):
                return False
            train: Callable[[Taxonomy, Lease], None] = self._retrain
        else:
            train = self._train
        with self._lock:
            if self._busy:
                return False
            lease = Lease.take(self.store, self.owner)
            if lease is None:
                log.debug("another process is training the model; routing with the current one meanwhile")
                return False
            self._busy = True
        try:
            (self._spawn or start_thread)(lambda: train(taxonomy, lease))
        except BaseException:
            self._finished()
            lease.__exit__(None, None, None)
            raise
        return True

    def _train(self, taxonomy: Taxonomy, lease: Lease) -> None:
        """A model for the edited taxonomy (its categories changed)."""
        with self._running(lease, "training a model for the edited taxonomy"):
            from connector.feedback import ensure_model  # scikit-learn: only processes that train load it

            started = time.monotonic()
            version = ensure_model(self.store, taxonomy, self.settings,  # it looks again, under the lease
                                   may_activate=still_current(lease, taxonomy, self._live))
            log.info("model for the edited taxonomy", extra={"model_version": version,
                                                             "seconds": round(time.monotonic() - started, 1)})

    def _retrain(self, taxonomy: Taxonomy, lease: Lease) -> None:
        """The retrain an admin asked for, behind its promotion gate, as the scheduled one."""
        with self._running(lease, "the requested retrain"):
            request = self.store.auth.holder(RETRAIN_REQUEST, now=self.store.db.wall())
            if request:  # taken up: a click from now on asks for another
                self.store.auth.unlock(RETRAIN_REQUEST, request["owner"])
            report = gated_retrain(self.store, taxonomy, self.settings, lease, self._live, now=self.store.clock(),
                                   trigger=requested_by(request["owner"] if request else None))
            log.info("requested retrain", extra={"promoted": report.promoted, "model_version": report.version,
                                                 "reason": report.reason})

    @contextmanager
    def _running(self, lease: Lease, what: str) -> Iterator[None]:
        """Hold the lease while the block trains; a failure is logged (the next check, a minute on, tries again;
        routing goes on meanwhile), and this process may start another training afterwards."""
        try:
            with lease:
                yield
        except Exception:
            log.exception(f"{what} failed")
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            self._busy = False
