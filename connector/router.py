"""Classifies a ticket with the active model and decides where it goes on each helpdesk."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from connector.classify.cascade import Cascade
from connector.classify.rules import RulesTier
from connector.mappings import PlatformMapping, Taxonomy, decide
from connector.models import Classification, RoutingDecision, candidates
from connector.store import Store

if TYPE_CHECKING:
    from connector.classify.llm import LLMTier
    from connector.classify.local import LocalModel


class Router:
    """The cascade over the store's active model, reloaded whenever another version is activated.

    Args:
        llm: builds the Claude tier (or None when it is off); called once, on the first classification,
            so that processes which never classify never load the SDK.
    """

    def __init__(self, *, store: Store, taxonomy: Taxonomy, mappings: dict[str, PlatformMapping], threshold: float,
                 llm: Callable[[], LLMTier | None] = lambda: None):
        self.store = store
        self.taxonomy = taxonomy
        self.mappings = mappings
        self.threshold = threshold
        self.rules = RulesTier(taxonomy)
        self._lock = threading.Lock()
        self._version: int | None = None
        self._model: LocalModel | None = None
        self._make_llm = llm
        self._llm: LLMTier | None = None
        self._llm_built = False

    def reconfigure(self, taxonomy: Taxonomy) -> None:
        """Use an edited taxonomy (the mappings dict is shared and updated in place by Services)."""
        with self._lock:
            self.taxonomy = taxonomy
            self.rules = RulesTier(taxonomy)
            self._llm_built = False  # the prompt is built from the taxonomy

    def live(self, category: str | None) -> bool:
        """False for a category in shadow mode: classify and record, don't write. A group-level decision is
        live only if every category it could be is."""
        return all(name not in self.taxonomy.categories or self.taxonomy.categories[name].mode == "live"
                   for name in candidates(category) or ([category] if category else []))

    def cascade(self) -> Cascade:
        """The cascade with the currently active model (one cheap query to notice a new one)."""
        from connector.classify.local import LocalModel  # scikit-learn: only processes that classify load it

        version = self.store.models.active_version()
        with self._lock:
            if version != self._version:
                self._model = LocalModel.from_bytes(self.store.models.blob(version)) if version is not None else None
                self._version = version
            if not self._llm_built:
                self._llm, self._llm_built = self._make_llm(), True
            model, loaded = self._model, self._version
        return Cascade(rules=self.rules, local=model, threshold=self.threshold, llm=self._llm,
                       model_version=f"local-v{loaded}" if loaded is not None else None)

    def classify(self, text: str, platform: str | None = None) -> Classification:
        """Run the cascade on one ticket's text, for one helpdesk (or, without one, for every mapping at once)."""
        return self.cascade().classify(text, self.destinations(platform))

    def destinations(self, platform: str | None = None) -> dict[str, str]:
        """Each category's destination, so that categories sharing one can be decided together: its group in
        this helpdesk's mapping or, without a helpdesk, its groups in every mapping (categories merge only
        where all the mappings send them to one place)."""
        mappings = [self.mappings[platform]] if platform else list(self.mappings.values())
        return {name: " ".join(m.categories[name].group_id for m in mappings)
                for name in self.taxonomy.categories if all(name in m.categories for m in mappings)}

    def decide(self, platform: str, classification: Classification) -> RoutingDecision:
        """Map a classification to this helpdesk's group, tags, priority and note."""
        return decide(classification, self.mappings[platform], self.taxonomy)
