"""/admin/model: the local model's versions and confusion matrix; retrain, activate and roll back.

The views that train import connector.feedback (scikit-learn) when they run, so the web process
doesn't load the ML stack just to serve pages.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, get_flashed_messages, redirect, render_template, url_for

from connector.admin.auth import current_user, login_required, services
from connector.admin.charts import heatmap
from connector.mappings import fits_taxonomy
from connector.model_keeper import request_retrain, training_status
from connector.models import MIN_HOLDOUT

bp = Blueprint("model", __name__, url_prefix="/model")


@bp.get("")
@login_required
def index() -> Any:
    app = services()
    models = app.store.models.all()
    active = next((m for m in models if m.active), None)
    confusion = active.metrics.get("cv_confusion") if active else None
    picture = heatmap(active.labels, confusion) if active and confusion else None
    outdated = active is not None and not fits_taxonomy(active.labels, app.taxonomy)
    return render_template("admin/model.html", models=models, active=active, picture=picture,
                           message=" ".join(map(str, get_flashed_messages())), training=training_status(app.store),
                           outdated=outdated, retrains=app.store.retrains.recent())


@bp.post("/retrain")
@login_required
def retrain() -> Any:
    """Ask a worker for the retrain: it takes minutes on a large feedback dataset, longer than a web request."""
    if request_retrain(services().store, by=current_user()):
        message = ("Retrain requested: a worker starts it within a minute. What it did appears under Retrains "
                   f"below when it is done; with fewer than {MIN_HOLDOUT} feedback examples the current model "
                   "hasn't seen, there is nothing to judge a candidate on, and it is skipped.")
    else:
        message = "A retrain is already requested: a worker starts it within a minute."
    flash(message)  # in the signed session: a crafted link can't put words on this page
    return redirect(url_for("admin.model.index"))


@bp.post("/<int:version>/activate")
@login_required
def activate(version: int) -> Any:
    from connector.feedback import LabelMismatch, promote

    app = services()
    try:
        promote(app.store, app.taxonomy, version)
    except (KeyError, LabelMismatch) as exc:
        abort(400, str(exc))
    flash(f"Model v{version} is active.")
    return redirect(url_for("admin.model.index"))


@bp.post("/rollback")
@login_required
def rollback() -> Any:
    from connector.feedback import rollback

    app = services()
    try:
        version = rollback(app.store, app.taxonomy)
    except LookupError as exc:
        abort(400, str(exc))
    flash(f"Rolled back to model v{version}.")
    return redirect(url_for("admin.model.index"))
