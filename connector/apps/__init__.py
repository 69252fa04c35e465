"""The helpdesk sidebar apps: a private Zendesk app and a Freshdesk app that show agents Deskroute's decision
on the open ticket, offer the runner-ups as one-click moves, and send feedback to /apps/api.

`deskroute app zendesk|freshdesk --url PUBLIC_URL --output FILE.zip` builds them (connector/apps/package.py).
"""

from connector.apps.package import build_freshdesk, build_zendesk, parse_public_url

__all__ = ["build_freshdesk", "build_zendesk", "parse_public_url"]
