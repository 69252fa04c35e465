"""Helpdesk adapters. Each module holds one `<Name>Platform`; PLATFORMS lists them by URL segment."""

from platforms.base import BadPayload, NotConfigured, Platform, PlatformError, Unauthorized
from platforms.freshdesk import FreshdeskPlatform
from platforms.zendesk import ZendeskPlatform

PLATFORMS: dict[str, type[Platform]] = {
    ZendeskPlatform.name: ZendeskPlatform,
    FreshdeskPlatform.name: FreshdeskPlatform,
}

__all__ = ["PLATFORMS", "BadPayload", "NotConfigured", "Platform", "PlatformError", "Unauthorized"]
