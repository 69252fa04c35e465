"""Build the helpdesk sidebar apps as installable zip files.

Zendesk: a private app for the Zendesk Apps framework v2 (manifest.json, translations/en.json, assets/),
shaped by the rules of Zendesk's own validator (github.com/zendesk/zendesk_apps_support) and its docs:
the manifest's author, defaultLocale, location and frameworkVersion "2.0"; a `secure` setting scoped to
the request header and without a default; the Deskroute host in domainWhitelist (secure settings are only
sent there); logo.png 320x320 and logo-small.png 128x128; a zip of at most 2 MB.

Freshdesk: a Freshworks platform 3.0 app (manifest.json, config/iparams.json, config/requests.json, app/),
the layout `fdk pack` produces: the token is a secure installation parameter, used only in request templates'
headers, which is where Freshworks substitutes secure values.

Neither package holds a secret: the admin pastes the app's own token (`deskroute app` prints it: derived from
DESKROUTE_APP_TOKEN for this helpdesk) into the app's settings at install time,
and the helpdesk's proxy adds it to each request. Both apps run the same sidebar (sidebar/sidebar.js) through
a thin adapter for the helpdesk's client library.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).parent
APP_NAME = "Deskroute"
TOKEN_PARAMETER = "token"
ZAF_SDK = "https://static.zdassets.com/zendesk_app_framework_sdk/2.0/zaf_sdk.min.js"
ZENDESK_MAX_BYTES = 2 * 1024 * 1024  # "The file size limit of the zip file for a private app is 2 MB."
FRESHWORKS_ENGINES = {"node": "18.20.8", "fdk": "9.7.4"}  # as in Freshworks' platform 3.0 app templates
API_PLACEHOLDER = "__DESKROUTE_API__"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# Zip entries get this fixed time, so that the same URL and version always build the same bytes.
ZIP_TIME = (2024, 1, 1, 0, 0, 0)

RGBA = tuple[int, int, int, int]


@dataclass(frozen=True)
class PublicURL:
    """Where the helpdesk's proxy reaches Deskroute."""

    scheme: str
    host: str  # the host name alone: Zendesk's domainWhitelist, Freshworks' request template host
    port: int | None
    prefix: str  # a path Deskroute is mounted under ("" at the root)

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}{f':{self.port}' if self.port else ''}{self.prefix}"

    def api(self, platform: str) -> str:
        return f"{self.base}/apps/api/tickets/{platform}/"


def parse_public_url(url: str) -> PublicURL:
    """Check and split Deskroute's public URL: https, or http for localhost alone (local testing)."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} has a bad port") from exc
    if not parts.hostname or parts.scheme not in ("https", "http"):
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        raise ValueError("must start with https:// (http:// only for localhost): the helpdesk sends the app's "
                         "token with every request")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r}: give the bare address, without query, fragment or user")
    if port == {"https": 443, "http": 80}[parts.scheme]:
        port = None
    return PublicURL(parts.scheme, parts.hostname.lower(), port, parts.path.rstrip("/"))


def app_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deskroute")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def _asset(*parts: str) -> str:
    return HERE.joinpath(*parts).read_text(encoding="utf-8")


def _script(adapter: str, api: str) -> str:
    """The shared sidebar followed by one helpdesk's adapter, with Deskroute's address written in."""
    code = _asset(adapter)
    if API_PLACEHOLDER in code:
        code = code.replace(API_PLACEHOLDER, json.dumps(api), 1)
    banner = f"/* {APP_NAME} {app_version()}: sidebar app built by `deskroute app`. */"
    return f"{banner}\n{_asset('sidebar', 'sidebar.js')}\n{code}"


def _json(value: object) -> bytes:
    # One key per line: Zendesk's secret scanner reads line by line, and `"name": "token",` on a line of its
    # own is not mistaken for an embedded token.
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()


# --- Zendesk -----------------------------------------------------------------------------------------------

def zendesk_manifest(url: PublicURL, author_email: str | None = None) -> dict[str, object]:
    author: dict[str, str] = {"name": APP_NAME, "url": url.base}
    if author_email:
        author["email"] = author_email
    return {
        "name": APP_NAME,
        "author": author,
        "defaultLocale": "en",
        "private": True,
        "location": {"support": {"ticket_sidebar": {"url": "assets/iframe.html", "flexible": True}}},
        "version": app_version(),
        "frameworkVersion": "2.0",
        "parameters": [
            # secure: Zendesk keeps the value server-side and puts it in place of {{setting.token}} in
            # requests its proxy sends; scopes ["header"]: only into request headers. No default.
            {"name": TOKEN_PARAMETER, "type": "text", "required": True, "secure": True, "scopes": ["header"]},
        ],
        "domainWhitelist": [url.host],
    }


def zendesk_translations() -> dict[str, object]:
    return {"app": {
        "name": APP_NAME,
        "short_description": "Why Deskroute routed this ticket, with one-click alternatives.",
        "long_description": "Shows the group Deskroute chose for the open ticket, how sure it was and why, the "
                            "two next-best groups as one-click moves, and a short form to tell Deskroute what the "
                            "right category was.",
        "installation_instructions": "Paste the Zendesk app token that `deskroute app zendesk` printed (not "
                                     "DESKROUTE_APP_TOKEN itself) into the Deskroute app token setting.",
        "parameters": {
            TOKEN_PARAMETER: {
                "label": "Deskroute app token",
                "helpText": "The Zendesk app token `deskroute app zendesk` printed. Zendesk keeps it "
                            "server-side and adds it to the app's requests to Deskroute.",
            },
        },
    }}


def zendesk_files(url: str, author_email: str | None = None) -> dict[str, bytes]:
    """The private app's files by path inside the zip."""
    public = parse_public_url(url)
    iframe = _asset("zendesk", "iframe.html")
    assert ZAF_SDK in iframe, "the iframe loads the ZAF SDK"
    return {
        "manifest.json": _json(zendesk_manifest(public, author_email)),
        "translations/en.json": _json(zendesk_translations()),
        "assets/iframe.html": iframe.encode(),
        "assets/main.js": _script("zendesk/adapter.js", public.api("zendesk")).encode(),
        "assets/main.css": _asset("sidebar", "sidebar.css").encode(),
        "assets/logo.png": logo_png(320, rounded=False),
        "assets/logo-small.png": logo_png(128, rounded=True),
    }


def build_zendesk(url: str, out: Path, author_email: str | None = None) -> Path:
    """Write the Zendesk private app for Deskroute at `url` to the zip file `out`."""
    path = _write_zip(zendesk_files(url, author_email), out)
    if path.stat().st_size > ZENDESK_MAX_BYTES:  # pragma: no cover - the package is some 20 KB
        raise ValueError(f"{path} is over Zendesk's 2 MB limit for private apps")
    return path


# --- Freshdesk ---------------------------------------------------------------------------------------------

def freshdesk_manifest() -> dict[str, object]:
    return {
        "platform-version": "3.0",
        "modules": {
            "common": {"requests": {"getDecision": {}, "postFeedback": {}}},
            "support_ticket": {"location": {"ticket_sidebar": {"url": "index.html",
                                                               "icon": "styles/images/icon.svg"}}},
        },
        "engines": dict(FRESHWORKS_ENGINES),
    }


def freshdesk_iparams() -> dict[str, object]:
    return {TOKEN_PARAMETER: {
        "display_name": "Deskroute app token",
        "description": "The Freshdesk app token `deskroute app freshdesk` printed. Freshworks keeps it "
                       "server-side and adds it to the app's requests to Deskroute.",
        "type": "text",
        "required": True,
        "secure": True,
    }}


def freshdesk_requests(url: PublicURL) -> dict[str, object]:
    if url.port and url.host not in LOCAL_HOSTS:
        raise ValueError("Freshworks request templates take a host name without a port: serve Deskroute on "
                         "the default https port (443)")
    host = f"{url.host}:{url.port}" if url.port else url.host
    path = f"{url.prefix}/apps/api/tickets/freshdesk/<%= context.ticket_id %>"
    headers = {"Authorization": f"Bearer <%= iparam.{TOKEN_PARAMETER} %>", "Content-Type": "application/json"}
    # "http" only works under `fdk run` (local testing); an uploaded app must use https.
    return {
        "getDecision": {"schema": {"method": "GET", "protocol": url.scheme, "host": host, "path": path,
                                   "headers": headers}},
        "postFeedback": {"schema": {"method": "POST", "protocol": url.scheme, "host": host,
                                    "path": f"{path}/feedback", "headers": headers}},
    }


def freshdesk_files(url: str) -> dict[str, bytes]:
    """The Freshdesk app's files by path inside the zip (the layout of `fdk pack`)."""
    public = parse_public_url(url)
    return {
        "manifest.json": _json(freshdesk_manifest()),
        "config/iparams.json": _json(freshdesk_iparams()),
        "config/requests.json": _json(freshdesk_requests(public)),
        "app/index.html": _asset("freshdesk", "index.html").encode(),
        "app/scripts/app.js": _script("freshdesk/adapter.js", public.api("freshdesk")).encode(),
        "app/styles/style.css": _asset("sidebar", "sidebar.css").encode(),
        "app/styles/images/icon.svg": _asset("freshdesk", "icon.svg").encode(),
    }


def build_freshdesk(url: str, out: Path) -> Path:
    """Write the Freshdesk app for Deskroute at `url` to the zip file `out`."""
    return _write_zip(freshdesk_files(url), out)


# --- files -------------------------------------------------------------------------------------------------

def _write_zip(files: dict[str, bytes], out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.part")
    with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    temp.replace(out)
    return out


def png(width: int, height: int, pixel: Callable[[int, int], RGBA]) -> bytes:
    """An 8-bit RGBA PNG ("PNG-24 with transparency"), from the standard library alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        for x in range(width):
            raw.extend(pixel(x, y))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA, deflate, no filter, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
            + chunk(b"IEND", b""))


BLUE = (0x1F, 0x5F, 0xAD)
# The icon.svg drawing, in its 64-unit square: two chevrons, the second at 60% opacity.
CHEVRONS = (((14, 46), (30, 30), (14, 14)), ((32, 46), (48, 30), (32, 14)))
STROKE = 3.5  # half the stroke width


def _near(px: float, py: float, a: tuple[int, int], b: tuple[int, int]) -> bool:
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return (px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2 <= STROKE * STROKE


def logo_png(size: int, rounded: bool) -> bytes:
    """Deskroute's logo at `size` pixels: logo.png is square (Zendesk rounds the corners itself),
    logo-small.png has transparent rounded corners."""
    scale = 64 / size
    radius = 10.0

    def pixel(x: int, y: int) -> RGBA:
        u, v = (x + 0.5) * scale, (y + 0.5) * scale
        if rounded:
            cx, cy = min(max(u, radius), 64 - radius), min(max(v, radius), 64 - radius)
            if (u - cx) ** 2 + (v - cy) ** 2 > radius * radius:
                return (0, 0, 0, 0)
        for index, (first, middle, last) in enumerate(CHEVRONS):
            if _near(u, v, first, middle) or _near(u, v, middle, last):
                if index == 0:
                    return (255, 255, 255, 255)
                red, green, blue = (round(0.6 * 255 + 0.4 * c) for c in BLUE)
                return (red, green, blue, 255)
        return (*BLUE, 255)

    return png(size, size, pixel)
