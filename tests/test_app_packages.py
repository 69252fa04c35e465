"""The helpdesk sidebar apps' packages (`deskroute app zendesk|freshdesk`): what the helpdesks check on upload.

Zendesk's checks are a port of its own validator, zendesk/zendesk_apps_support (lib/zendesk_apps_support/
validations/*.rb, manifest.rb, location.rb, app_version.rb; read at f3de3c7, August 2026): Package#validate
runs Manifest, Marketplace, Source, Translations and Requirements (errors) and SecureSettings, Requests and
Secrets (warnings). The asset rules (logo.png 320x320, logo-small.png 128x128 PNG-24 with transparency) and the
2 MB limit come from Zendesk's docs ("Styles and assets", "Create app brand assets", "Uploading and installing
a private app"). Freshworks' rules come from its platform 3.0 docs and samples (request templates: host an
FQDN without protocol or slash, secure iparams only in headers; freshworks-developers/request-method-samples
UserGuide.md, freshworks-developers/marketplace skills/app-dev/references).
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.apps import build_freshdesk, build_zendesk, parse_public_url
from connector.cli import main
from helpers import PROJECT, cli_environment

URL = "https://deskroute.example.com"
HOST = "deskroute.example.com"
A_TOKEN = "dr-app-7b2F9qX4LmN8pR3sT6vW1yZ0aB5cD2eG"


# --- a port of zendesk_apps_support's checks ---------------------------------------------------------------

SUPPORT_LOCATIONS = {"top_bar", "nav_bar", "ticket_sidebar", "new_ticket_sidebar", "user_sidebar",
                     "organization_sidebar", "background", "modal", "ticket_editor", "system_top_bar"}
PRODUCT_KEYS = {"support", "zendesk", "chat", "zopim", "standalone_chat", "lotus_box", "sell"}
FRAMEWORK_VERSIONS = {"2.0"}  # AppVersion::TO_BE_SERVED
PARAMETER_TYPES = {"text", "checkbox", "url", "number", "multiline", "hidden", "oauth"}  # mtls is behind a flag
SECURE_PARAM_SCOPES = {"header", "body", "url", "jwt_secret_key", "jwt_claim", "basic_auth_username",
                       "basic_auth_password"}
VALID_LOCALE = re.compile(r"^[a-z]{2,3}(-\w{2,3})?$")
SECRET_KEYWORDS = ["password", "secret", "secretToken", "secret_token", "auth_key", "authKey", "auth_pass",
                   "authPass", "auth_user", "AuthUser", "api_key"]
# Validations::Secrets::APPLICATION_SECRETS, minus the ones that name other vendors' key formats we can't
# produce (Slack, AWS, Heroku...); Ruby's ^ is a line anchor (MULTILINE), its (?m) is Python's DOTALL.
APPLICATION_SECRETS = {
    "Private key": re.compile(r"-----BEGIN (RSA|OPENSSH|DSA|EC|PGP) PRIVATE KEY"),
    "App Key": re.compile(r"([aA][pP][pP][-_][kK][eE][yY]( [:\"=-]|[:\"=-]).*.[0-9a-zA-Z+_.-]{4,156})"),
    "App Secret": re.compile(r"([aA][pP][pP][-_][sS][eE][cC][rR][eE][tT]( [:\"=-]|[:\"=-]).*.[0-9a-zA-Z+_.-]{4,156})"),
    "Generic Secret": re.compile(r"^([sS][eE][cC][rR][eE][tT]( [:\"=-]|[:\"=-]).*.[0-9a-zA-Z+_.-]{4,156})",
                                 re.MULTILINE | re.DOTALL),
    "Token Key": re.compile(r"([tT][oO][kK][eE][nN][-_][kK][eE][yY]( [:\"=-]|[:\"=-]).*.[0-9a-zA-Z+_.-]{4,156})"),
    "Token Secret": re.compile(
        r"([tT][oO][kK][eE][nN][-_][sS][eE][cC][rR][eE][tT]( [:\"=-]|[:\"=-]).*.[0-9a-zA-Z+_.-]{4,156})"),
    "Private Key": re.compile(
        r"([pP][rR][iI][vV][aA][tT][eE][-_][kK][eE][yY]( [:\"=-]|[:\"=-]).*.[0-9a-zA-Z+_.-]{4,156})"),
    "Password": re.compile(r"([pP][aA][sS][sS][wW][oO][rR][dD].*.[0-9a-zA-Z+_.-]{4,156})"),
    "Token": re.compile(r"([tT][oO][kK][eE][nN]( [:\"=-]|[:\"=-]).*.[0-9a-zA-Z+_.-]{4,156})"),
}
TEXT_FILE = re.compile(r".*(html?|xml|js|json?)$")  # Package#text_files
HTTP_URL = re.compile(r"http://[^\s\"'<>)]+")  # Validations::Requests: URI.regexp(['http'])
BLOCKED_EXTENSIONS = {"rar", "zip", "gzip", "pdf", "doc", "docx", "avi", "bin", "bz", "bz2", "csh", "sh", "jar",
                      "mp3", "mpeg", "odt", "pptx", "ppt", "xls", "xlsx", "7z"}  # Validations::Mime
ZENDESK_ASSET_TYPES = {"png", "jpg", "jpeg", "gif", "svg", "js", "htm", "html", "css", "map", "eot", "woff", "woff2",
                       "otf", "ttf", "json", "xml", "hbs", "hdbs"}  # "Styles and assets": accepted asset types


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys {keys}"  # Manifest::NoOverrideHash
    return dict(pairs)


def zaf_check(files: dict[str, bytes]) -> tuple[list[str], list[str]]:
    """Package#validate's errors and warnings for an app's files."""
    errors: list[str] = []
    warnings: list[str] = []
    if "manifest.json" not in files:
        return ["missing_manifest"], warnings
    manifest = json.loads(files["manifest.json"], object_pairs_hook=_no_duplicate_keys)

    for key in ("author", "defaultLocale"):  # REQUIRED_MANIFEST_FIELDS
        if manifest.get(key) is None:
            errors.append(f"manifest_keys.missing: {key}")
    for key in ("defaultLocale", "version", "frameworkVersion"):
        if key in manifest and not isinstance(manifest[key], str):
            errors.append(f"unacceptable_string: {key}")
    author = manifest.get("author") or {}
    for key in ("name", "email", "url"):
        if key in author and not isinstance(author[key], str):
            errors.append(f"unacceptable_string: author {key}")
    if author.get("url") and not re.match(r"^https?://[^/\s]+", author["url"]):
        errors.append("invalid_url: author url")
    for key in ("requirementsOnly", "marketingOnly", "singleInstall", "signedUrls", "private"):
        if key in manifest and manifest[key] not in (True, False):
            errors.append(f"unacceptable_boolean: {key}")
    whitelist = manifest.get("domainWhitelist")
    if whitelist is not None and not (isinstance(whitelist, list) and all(isinstance(d, str) for d in whitelist)):
        errors.append("unacceptable_array_of_strings: domainWhitelist")

    locale = manifest.get("defaultLocale")
    if locale is not None:
        if not VALID_LOCALE.match(locale):
            errors.append("invalid_default_locale")
        elif f"translations/{locale}.json" not in files:
            errors.append("missing_translation_file")

    locations = manifest.get("location")
    if not isinstance(locations, dict) or not any(locations.values()):
        errors.append("manifest_keys.missing: location")
        locations = {}
    for product, places in locations.items():
        if product not in PRODUCT_KEYS:
            errors.append(f"invalid_host: {product}")
            continue
        for name, options in places.items():
            if product in ("support", "zendesk") and name not in SUPPORT_LOCATIONS:
                errors.append(f"invalid_location: {name}")
            options = options if isinstance(options, dict) else {"url": options}
            url = options.get("url")
            if isinstance(url, str) and url and "{{setting." not in url:
                absolute = re.match(r"^[a-z]+://", url)
                ok = url.startswith("https://") if absolute else url.startswith("assets/") and url in files
                if not ok:
                    errors.append(f"invalid_location_uri: {url}")
            elif options.get("autoLoad", True):
                errors.append(f"blank_location_uri: {name}")
            if options.get("flexible") not in (None, True, False):
                errors.append("invalid_location_flexible_type")
    version = manifest.get("frameworkVersion")
    if version is None:
        errors.append("manifest_keys.missing: frameworkVersion")
    elif version not in FRAMEWORK_VERSIONS:
        errors.append(f"invalid_version: {version}")

    parameters = manifest.get("parameters", [])
    if not isinstance(parameters, list):
        errors.append("parameters_not_an_array")
        parameters = []
    names = [p.get("name") for p in parameters]
    if len(names) != len(set(names)):
        errors.append("duplicate_parameters")
    for p in parameters:
        kind, secure, scopes = p.get("type", "text"), p.get("secure", False), p.get("scopes")
        for flag in ("required", "secure"):
            if p.get(flag, False) not in (True, False):
                errors.append(f"unacceptable_boolean: parameters[{p.get('name')}].{flag}")
        if kind not in PARAMETER_TYPES:
            errors.append(f"invalid_type_parameter: {kind}")
        if kind == "hidden" and p.get("required"):
            errors.append("invalid_hidden_parameter")
        if kind == "oauth" and secure:
            errors.append("oauth_parameter_cannot_be_secure")
        if p.get("name") == "name":
            errors.append("name_as_parameter_name")
        if scopes is not None:
            if not secure:
                errors.append("field_requires_secure_parameter: scopes")
            if not isinstance(scopes, list):
                errors.append("unacceptable_array: scopes")
            elif not scopes:
                errors.append("field_cannot_be_empty: scopes")
            elif set(scopes) - SECURE_PARAM_SCOPES:
                errors.append(f"field_contains_invalid_values: scopes {set(scopes) - SECURE_PARAM_SCOPES}")
        # Validations::SecureSettings (warnings)
        if re.search("token|key|pwd|password", str(p.get("name")), re.IGNORECASE) and kind == "text" and not secure:
            warnings.append(f"insecure_token_parameter_in_manifest: {p.get('name')}")
        if "default" in p and (secure or kind == "hidden"):
            warnings.append(f"default_secure_or_hidden_parameter_in_manifest: {p.get('name')}")
        if secure and not scopes:
            warnings.append(f"secure_parameters_with_no_scopes_in_manifest: {p.get('name')}")

    for path, content in files.items():  # Validations::Translations
        found = re.match(r"^translations/(.*)\.json$", path)
        if not found:
            continue
        if not VALID_LOCALE.match(found[1]):
            errors.append(f"translation.invalid_locale: {path}")
        translation = json.loads(content)
        if not isinstance(translation, dict):
            errors.append(f"translation.not_json_object: {path}")
            continue
        app = translation.get("app") if isinstance(translation.get("app"), dict) else {}
        for name, leaf in (app.get("parameters") or {}).items():
            if not (isinstance(leaf, dict) and "label" in leaf):
                errors.append(f"translation.missing_required_key_on_leaf: label of {name}")
        if path == "translations/en.json":
            required = ["name"] if manifest.get("private", True) else ["name", "short_description",
                                                                        "installation_instructions",
                                                                        "long_description"]
            present = {"short_description" if key == "description" else key for key in app}
            errors.extend(f"translation.missing_required_key: {key}" for key in required if key not in present)

    for path, content in files.items():
        extension = path.rsplit(".", 1)[-1].lower()
        if extension in BLOCKED_EXTENSIONS or content[:4] == b"PK\x03\x04":
            errors.append(f"unsupported_mime_type_detected: {path}")
        if not TEXT_FILE.match(path):
            continue
        text = content.decode()
        if path.endswith((".js", ".jsx", ".html", ".htm")) and (urls := HTTP_URL.findall(text)):
            warnings.append(f"insecure_http_request: {path} {urls}")
        for kind, pattern in APPLICATION_SECRETS.items():
            if hit := pattern.search(text):
                warnings.append(f"application_secret {kind}: {path}: {hit.group(0)[:60]!r}")
        if hit := re.search("|".join(map(re.escape, SECRET_KEYWORDS)), text):
            warnings.append(f"generic_secrets: {path} ({hit.group(0)!r})")
    return errors, warnings


# --- helpers ------------------------------------------------------------------------------------------------

def unzip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        for info in archive.infolist():
            assert not info.is_dir() and (info.external_attr >> 16) & 0o170000 != 0o120000, info  # no symlinks
            assert not info.filename.startswith(("/", "..")) and "/../" not in info.filename
        return {name: archive.read(name) for name in archive.namelist()}


def png_info(data: bytes) -> tuple[int, int, int, int]:
    """Width, height, bit depth and colour type, after checking every chunk's CRC and the pixel data."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, idat = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks.append(kind)
        idat += body if kind == b"IDAT" else b""
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    channels = {6: 4, 2: 3}[colour]
    assert len(zlib.decompress(idat)) == height * (1 + width * channels * depth // 8)
    return width, height, depth, colour


class References(HTMLParser):
    """The src and href attributes of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("src", "href") and value]


def references(html: bytes) -> list[str]:
    parser = References()
    parser.feed(html.decode())
    return parser.found


@pytest.fixture(scope="module")
def zendesk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    path = build_zendesk(URL, tmp_path_factory.mktemp("zendesk") / "deskroute-zendesk.zip")
    return path, unzip(path)


@pytest.fixture(scope="module")
def freshdesk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    path = build_freshdesk(URL, tmp_path_factory.mktemp("freshdesk") / "deskroute-freshdesk.zip")
    return path, unzip(path)


# --- Zendesk ------------------------------------------------------------------------------------------------

def test_zendesk_package_passes_zendesks_validator_without_a_warning(zendesk: tuple[Path, dict[str, bytes]]) -> None:
    errors, warnings = zaf_check(zendesk[1])
    assert errors == [] and warnings == []


def test_the_validator_port_catches_what_zendesk_would(zendesk: tuple[Path, dict[str, bytes]]) -> None:
    files = dict(zendesk[1])
    manifest = json.loads(files["manifest.json"])
    manifest["location"]["support"] = {"ticket_sidebar_x": {"url": "assets/iframe.html"}}
    manifest["frameworkVersion"] = "1.0"
    manifest["parameters"] = [{"name": "token", "type": "text", "secure": True, "default": "x"},
                              {"name": "api_token", "type": "text"},
                              {"name": "other", "secure": True, "scopes": ["cookie"]}]
    del manifest["author"]
    files["manifest.json"] = json.dumps(manifest).encode()
    files["assets/main.js"] += b'\nvar secret = "abcd1234";\nfetch("http://example.com/x");\n'
    errors, warnings = zaf_check(files)
    assert "manifest_keys.missing: author" in errors and "invalid_location: ticket_sidebar_x" in errors
    assert "invalid_version: 1.0" in errors
    assert any(e.startswith("field_contains_invalid_values: scopes") for e in errors)
    assert {"default_secure_or_hidden_parameter_in_manifest: token", "insecure_token_parameter_in_manifest: api_token",
            "secure_parameters_with_no_scopes_in_manifest: token"} <= set(warnings)
    assert any(w.startswith("insecure_http_request: assets/main.js") for w in warnings)
    assert any(w.startswith("generic_secrets: assets/main.js") for w in warnings)


def test_zendesk_manifest(zendesk: tuple[Path, dict[str, bytes]]) -> None:
    manifest = json.loads(zendesk[1]["manifest.json"])
    assert manifest["name"] == "Deskroute" and manifest["author"]["name"] and manifest["author"]["url"] == URL
    assert manifest["defaultLocale"] == "en" and manifest["private"] is True
    assert manifest["frameworkVersion"] == "2.0" and re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert manifest["location"] == {"support": {"ticket_sidebar": {"url": "assets/iframe.html", "flexible": True}}}
    [token] = manifest["parameters"]
    assert token == {"name": "token", "type": "text", "required": True, "secure": True, "scopes": ["header"]}
    assert "default" not in token
    assert manifest["domainWhitelist"] == [HOST]


def test_zendesk_files_referenced_exist_and_are_allowed(zendesk: tuple[Path, dict[str, bytes]]) -> None:
    files = zendesk[1]
    assert set(files) == {"manifest.json", "translations/en.json", "assets/iframe.html", "assets/main.js",
                          "assets/main.css", "assets/logo.png", "assets/logo-small.png"}
    assert all(path.rsplit(".", 1)[-1] in ZENDESK_ASSET_TYPES for path in files if path.startswith("assets/"))
    referenced = references(files["assets/iframe.html"])
    assert referenced == ["main.css", "https://static.zdassets.com/zendesk_app_framework_sdk/2.0/zaf_sdk.min.js",
                          "main.js"]
    for ref in referenced:
        assert ref.startswith("https://") or f"assets/{ref}" in files, ref
    main_js = files["assets/main.js"].decode()
    assert 'var API = "https://deskroute.example.com/apps/api/tickets/zendesk/";' in main_js
    assert 'Authorization: "Bearer {{setting.token}}"' in main_js and "secure = true" in main_js
    assert 'client.set("ticket.assignee", {groupId: ' in main_js and "__DESKROUTE_API__" not in main_js


def test_zendesk_translations(zendesk: tuple[Path, dict[str, bytes]]) -> None:
    app = json.loads(zendesk[1]["translations/en.json"])["app"]
    # A private app needs "name"; a public one also these three (Validations::Translations#get_missing_keys).
    assert {"name", "short_description", "long_description", "installation_instructions"} <= set(app)
    assert len(app["short_description"]) <= 80  # the Marketplace's limit
    assert app["parameters"]["token"]["label"] and app["parameters"]["token"]["helpText"]


def test_zendesk_icons(zendesk: tuple[Path, dict[str, bytes]]) -> None:
    assert png_info(zendesk[1]["assets/logo.png"])[:2] == (320, 320)
    assert png_info(zendesk[1]["assets/logo-small.png"]) == (128, 128, 8, 6)  # PNG-24 with transparency (RGBA)


def test_zendesk_zip_is_small_self_contained_and_reproducible(zendesk: tuple[Path, dict[str, bytes]],
                                                               tmp_path: Path) -> None:
    path, files = zendesk
    assert path.stat().st_size < 2 * 1024 * 1024
    again = build_zendesk(URL, tmp_path / "again.zip")
    assert again.read_bytes() == path.read_bytes()


def test_no_token_in_either_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKROUTE_APP_TOKEN", A_TOKEN)  # whatever the environment holds stays out
    for build in (build_zendesk, build_freshdesk):
        for content in unzip(build(URL, tmp_path / f"{build.__name__}.zip")).values():
            assert A_TOKEN.encode() not in content


def test_author_email_and_a_path_prefix(tmp_path: Path) -> None:
    files = unzip(build_zendesk(f"{URL}/deskroute/", tmp_path / "z.zip", author_email="it@acme.example"))
    manifest = json.loads(files["manifest.json"])
    assert manifest["author"]["email"] == "it@acme.example" and manifest["domainWhitelist"] == [HOST]
    assert b'"https://deskroute.example.com/deskroute/apps/api/tickets/zendesk/"' in files["assets/main.js"]


@pytest.mark.parametrize("url", ["http://deskroute.example.com", "ftp://deskroute.example.com", "deskroute.example.com",
                                 "https://deskroute.example.com/?x=1", "https://user:pw@deskroute.example.com"])
def test_bad_urls_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_zendesk(url, tmp_path / "z.zip")
    assert not (tmp_path / "z.zip").exists()


def test_localhost_may_be_http() -> None:
    public = parse_public_url("http://localhost:8000/")
    assert (public.scheme, public.host, public.port, public.prefix) == ("http", "localhost", 8000, "")
    assert parse_public_url("https://deskroute.example.com:443").base == URL


# --- Freshdesk ----------------------------------------------------------------------------------------------

FRESHWORKS_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH"}
FRESHWORKS_CONTENT_TYPES = {"application/json", "application/xml", "text/html", "text/xml", "application/jsonp",
                            "text/plain", "text/javascript", "application/vnd.api+json"}


def test_freshdesk_manifest_and_files(freshdesk: tuple[Path, dict[str, bytes]]) -> None:
    files = freshdesk[1]
    assert set(files) == {"manifest.json", "config/iparams.json", "config/requests.json", "app/index.html",
                          "app/scripts/app.js", "app/styles/style.css", "app/styles/images/icon.svg"}
    manifest = json.loads(files["manifest.json"], object_pairs_hook=_no_duplicate_keys)
    assert manifest["platform-version"] == "3.0" and "product" not in manifest  # 3.0 has modules, not product
    sidebar = manifest["modules"]["support_ticket"]["location"]["ticket_sidebar"]
    assert sidebar == {"url": "index.html", "icon": "styles/images/icon.svg"}
    assert f"app/{sidebar['url']}" in files and f"app/{sidebar['icon']}" in files
    assert set(manifest["engines"]) == {"node", "fdk"}
    assert "whitelisted-domains" not in json.dumps(manifest)  # 2.x; 3.0 declares hosts in request templates
    html = files["app/index.html"]
    assert references(html) == ["styles/style.css", "{{{appclient}}}", "scripts/app.js"]  # client before app
    for ref in references(html):
        assert ref == "{{{appclient}}}" or f"app/{ref}" in files
    svg = files["app/styles/images/icon.svg"].decode()
    assert svg.startswith("<svg") and "viewBox" in svg and "<script" not in svg and "<image" not in svg


def test_freshdesk_token_is_a_secure_iparam(freshdesk: tuple[Path, dict[str, bytes]]) -> None:
    iparams = json.loads(freshdesk[1]["config/iparams.json"])
    token = iparams["token"]
    assert token["secure"] is True and token["type"] == "text" and token["required"] is True
    assert token["display_name"] and "default_value" not in token


def test_freshdesk_request_templates(freshdesk: tuple[Path, dict[str, bytes]]) -> None:
    files = freshdesk[1]
    manifest, templates = json.loads(files["manifest.json"]), json.loads(files["config/requests.json"])
    iparams = json.loads(files["config/iparams.json"])
    assert set(templates) == set(manifest["modules"]["common"]["requests"]) == {"getDecision", "postFeedback"}
    secure = {name for name, spec in iparams.items() if spec.get("secure")}
    for name, template in templates.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name)
        schema = template["schema"]
        assert schema["method"] in FRESHWORKS_METHODS and schema["protocol"] == "https"
        assert schema["host"] == HOST  # an FQDN: no protocol, no path, no trailing slash
        assert schema["path"].startswith("/apps/api/tickets/freshdesk/<%= context.ticket_id %>")
        assert schema["headers"]["Authorization"] == "Bearer <%= iparam.token %>"
        assert schema["headers"]["Content-Type"] in FRESHWORKS_CONTENT_TYPES
        for field in ("host", "path", "query"):  # secure iparams may only go into headers
            assert not any(f"iparam.{s}" in json.dumps(schema.get(field, "")) for s in secure), (name, field)
    assert (templates["getDecision"]["schema"]["method"], templates["postFeedback"]["schema"]["method"]) == ("GET",
                                                                                                          "POST")
    assert templates["postFeedback"]["schema"]["path"].endswith("/feedback")
    app_js = files["app/scripts/app.js"].decode()
    assert "client.request.invokeTemplate(template, options)" in app_js
    for name in templates:
        assert f'invoke("{name}", {{context: {{ticket_id: ' in app_js
    assert 'client.interface.trigger("setValue", {id: "group", value: ' in app_js


def test_freshdesk_refuses_a_port_but_takes_localhost(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without a port"):
        build_freshdesk("https://deskroute.example.com:8443", tmp_path / "f.zip")
    templates = json.loads(unzip(build_freshdesk("http://localhost:8000", tmp_path / "f.zip"))["config/requests.json"])
    assert templates["getDecision"]["schema"]["protocol"] == "http"  # only `fdk run` accepts it
    assert templates["getDecision"]["schema"]["host"] == "localhost:8000"


def test_both_apps_run_the_same_sidebar(zendesk: tuple[Path, dict[str, bytes]],
                                        freshdesk: tuple[Path, dict[str, bytes]]) -> None:
    shared = (PROJECT / "connector" / "apps" / "sidebar" / "sidebar.js").read_text()
    assert shared in zendesk[1]["assets/main.js"].decode() and shared in freshdesk[1]["app/scripts/app.js"].decode()
    assert zendesk[1]["assets/main.css"] == freshdesk[1]["app/styles/style.css"]


def test_the_assets_ship_in_the_wheel() -> None:
    import tomllib

    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    assert "connector" in config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    ignored = (PROJECT / ".gitignore").read_text().split()  # hatch leaves out what git ignores
    for asset in ("sidebar.js", "sidebar.css", "iframe.html", "index.html", "adapter.js", "icon.svg"):
        assert not any(re.fullmatch(pattern.replace(".", r"\.").replace("*", ".*"), asset) for pattern in ignored)


# --- the command ----------------------------------------------------------------------------------------------

@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    cli_environment(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'cli.db'}")  # no database is opened
    monkeypatch.delenv("DESKROUTE_APP_TOKEN", raising=False)

    def invoke(*args: str) -> object:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_app_zendesk_makes_a_token_and_shows_it_once(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("app", "zendesk", "--url", URL, "--output", "out/zendesk.zip")
    assert result.exit_code == 0, result.output
    [token] = re.findall(r"^    ([A-Za-z0-9_-]{43})$", result.output, re.MULTILINE)  # token_urlsafe(32)
    assert result.output.count(token) == 1
    assert "Set DESKROUTE_APP_TOKEN to it on every Deskroute process" in result.output
    from connector.apps_api import app_token

    assert f"paste this in its settings (\"Deskroute app token\"):\n\n    {app_token(token, 'zendesk')}" \
        in result.output  # the app's own token, derived from the one the processes keep
    files = unzip(tmp_path / "out" / "zendesk.zip")
    assert json.loads(files["manifest.json"])["domainWhitelist"] == [HOST]
    assert not any(token.encode() in content for content in files.values())
    second = run("app", "zendesk", "--url", URL, "--output", "out/zendesk.zip")
    assert token not in second.output  # a new one each time: nothing was stored


def test_app_freshdesk_with_the_token_set_never_prints_it(run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKROUTE_APP_TOKEN", A_TOKEN)
    result = run("app", "freshdesk", "--url", URL + "/", "--output", "fd.zip")
    assert result.exit_code == 0, result.output
    from connector.apps_api import app_token

    assert A_TOKEN not in result.output  # the processes' secret stays out; the app gets its derived token
    assert app_token(A_TOKEN, "freshdesk") in result.output and app_token(A_TOKEN, "zendesk") not in result.output
    templates = json.loads(unzip(tmp_path / "fd.zip")["config/requests.json"])
    assert templates["getDecision"]["schema"]["host"] == HOST


def test_app_refuses_a_short_token(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DESKROUTE_APP_TOKEN", "changeme")
    result = CliRunner().invoke(main, ["app", "zendesk", "--url", URL, "--output", "z.zip"])
    assert result.exit_code != 0 and "too short" in result.output


def test_app_refuses_plain_http_except_localhost(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    refused = run("app", "zendesk", "--url", "http://deskroute.example.com", "--output", "z.zip")
    assert refused.exit_code == 2 and "https://" in refused.output and not (tmp_path / "z.zip").exists()
    port = run("app", "freshdesk", "--url", "https://deskroute.example.com:8443", "--output", "f.zip")
    assert port.exit_code == 2 and "without a port" in port.output
    local = run("app", "zendesk", "--url", "http://localhost:8000", "--output", "z.zip")
    assert local.exit_code == 0, local.output
    assert zipfile.is_zipfile(io.BytesIO((tmp_path / "z.zip").read_bytes()))
