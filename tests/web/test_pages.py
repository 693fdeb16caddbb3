"""The web UI in-process (no browser, no port): login flow, access control, every page, assets."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medcycle.api.app import create_app
from medcycle.auth import audit, users
from medcycle.auth.roles import Permission
from medcycle.auth.sessions import COOKIE_NAME
from medcycle.platform import Platform
from medcycle.settings import load_settings
from medcycle.web import admin as admin_pages
from medcycle.web.errors import safe_next
from medcycle.web.nav import ADMIN, BY_KEY, STAGES
from medcycle.web.render import format_hint

SECRET = "x" * 40


class PageParts(HTMLParser):
    """The bits of a page the tests look at: <title>, <h1>, navigation links, form fields."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.title = ""
        self.h1 = ""
        self.nav_links: list[tuple[str, str]] = []
        self.inputs: dict[str, dict[str, str | None]] = {}
        self._in: list[str] = []
        self._in_nav = 0
        self._href: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "nav":
            self._in_nav += 1
        if tag == "a" and self._in_nav:
            self._href, self._text = a.get("href"), []
        if tag == "input" and a.get("name"):
            self.inputs[str(a["name"])] = a
        if tag in {"title", "h1"}:
            self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self._in_nav -= 1
        if tag == "a" and self._href is not None:
            self.nav_links.append((self._href, " ".join("".join(self._text).split())))
            self._href = None
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)
        if "title" in self._in:
            self.title += data
        if "h1" in self._in:
            self.h1 += data


def parts(html: str) -> PageParts:
    p = PageParts(html)
    p.title, p.h1 = " ".join(p.title.split()), " ".join(p.h1.split())
    return p


def make_platform(home: Path, **overrides: Any) -> Platform:
    return Platform(load_settings(home=home, environment="test", secret_key=SECRET, **overrides))


@pytest.fixture
def web_platform(tmp_path: Path) -> Iterator[tuple[Platform, str]]:
    platform = make_platform(tmp_path / "home")
    token = platform.init().admin_token
    assert token
    try:
        yield platform, token
    finally:
        platform.close()


@pytest.fixture
def client(web_platform: tuple[Platform, str]) -> Iterator[TestClient]:
    with TestClient(create_app(web_platform[0]), follow_redirects=False) as c:
        yield c


@pytest.fixture
def admin_client(client: TestClient, web_platform: tuple[Platform, str]) -> TestClient:
    r = client.post("/login", data={"token": web_platform[1], "next": "/"})
    assert r.status_code == 303
    return client


def issue_token(platform: Platform, name: str, role: str) -> str:
    with platform.session() as s:
        users.create_user(s, name, role)
        return users.create_token(s, name).secret


NAV_PATHS = [item.href for item in (*STAGES, *ADMIN)]


# -- logged out ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [*NAV_PATHS, "/ui/nowhere"])
def test_pages_redirect_to_login_when_logged_out(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in {303, 404}
    if path == "/ui/nowhere":
        assert r.status_code == 404 and "text/html" in r.headers["content-type"]
        return
    assert r.status_code == 303
    assert r.headers["location"] == f"/login?next={path}"


def test_redirect_keeps_the_query_string(client: TestClient) -> None:
    r = client.get("/ui/admin/audit?actor=admin&action=user.")
    assert r.headers["location"] == "/login?next=/ui/admin/audit%3Factor%3Dadmin%26action%3Duser."


def test_login_form(client: TestClient) -> None:
    r = client.get("/login?next=/ui/data")
    assert r.status_code == 200
    page = parts(r.text)
    assert page.title == "Log in · medcycle"
    assert page.h1 == "Log in to medcycle"
    assert page.inputs["token"]["type"] == "password"
    assert page.inputs["next"]["value"] == "/ui/data"
    assert page.nav_links == []  # no navigation before logging in
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("token", ["", "nonsense", "mct_abc_def", "mct_0123456789abcdef_wrong"])
def test_bad_token_shows_a_clear_message_with_401(client: TestClient, token: str) -> None:
    r = client.post("/login", data={"token": token, "next": "/ui/data"})
    assert r.status_code == 401
    assert "That token was not accepted" in r.text
    assert "<code>medcycle token create --user NAME</code>" in r.text
    assert "Traceback" not in r.text
    assert COOKIE_NAME not in r.headers.get("set-cookie", "")
    assert parts(r.text).inputs["next"]["value"] == "/ui/data"
    assert client.get("/").status_code == 303  # still logged out


def test_login_sets_a_signed_http_only_cookie_and_goes_to_next(
    client: TestClient, web_platform: tuple[Platform, str]
) -> None:
    platform, token = web_platform
    r = client.post("/login", data={"token": token, "next": "/ui/admin/users?x=1"})
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/admin/users?x=1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert token.split("_", 2)[2] not in cookie  # the secret never travels in the cookie
    assert client.get("/ui/admin/users").status_code == 200
    with platform.session() as s:
        assert [e.outcome for e in audit.query(s, action="web.login")] == ["ok"]


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "ui/data"]
)
def test_login_never_redirects_off_site(client: TestClient, web_platform: tuple[Platform, str], target: str) -> None:
    r = client.post("/login", data={"token": web_platform[1], "next": target})
    assert r.status_code == 303
    assert r.headers["location"] == "/"


def test_safe_next() -> None:
    assert safe_next("/ui/data?x=1") == "/ui/data?x=1"
    assert safe_next(None) == "/"
    assert safe_next("/\x00evil") == "/"
    assert safe_next("http:/ui") == "/"


def test_hints_set_commands_as_code_and_escape_the_rest() -> None:
    assert format_hint("Run `medcycle init` <now>") == "Run <code>medcycle init</code> &lt;now&gt;"
    assert format_hint("`<b>`") == "<code>&lt;b&gt;</code>"
    assert format_hint("one ` backtick <i>") == "one ` backtick &lt;i&gt;"
    assert format_hint(None) == ""


def test_login_page_when_already_logged_in_goes_on(admin_client: TestClient) -> None:
    r = admin_client.get("/login?next=/ui/models")
    assert r.status_code == 303 and r.headers["location"] == "/ui/models"


# -- logged in -------------------------------------------------------------------------------------------
def test_every_nav_page_answers_with_its_h1(admin_client: TestClient) -> None:
    home = parts(admin_client.get("/").text)
    links = [href for href, _ in home.nav_links]
    assert links == NAV_PATHS  # every stage in life-cycle order, then the admin pages
    titles = {item.href: item.title for item in (*STAGES, *ADMIN)}
    for href in links:
        r = admin_client.get(href)
        assert r.status_code == 200, href
        page = parts(r.text)
        assert page.h1 == titles[href], href
        assert page.title == f"{titles[href]} · medcycle", href
        assert 'aria-current="page"' in r.text, href


def test_nav_labels_follow_the_life_cycle(admin_client: TestClient) -> None:
    labels = [label for _, label in parts(admin_client.get("/").text).nav_links]
    assert labels == [
        "Overview", "1Hypotheses", "2Data", "3Labels", "4Datasets", "5Experiments", "6Training", "7Evaluation",
        "8Models", "9Serving", "10Monitoring", "Users & tokens", "Audit log", "Queues", "Object store",
    ]


def test_header_shows_user_role_and_logout(admin_client: TestClient) -> None:
    html = admin_client.get("/ui/data").text
    assert '<span class="who-name">admin</span>' in html
    assert "role-admin" in html
    assert '<form method="post" action="/logout"' in html


@pytest.mark.parametrize("item", [i for i in STAGES if i.placeholder], ids=lambda i: i.key)
def test_placeholder_pages_say_what_will_be_there(admin_client: TestClient, item: Any) -> None:
    html = admin_client.get(item.href).text
    assert "Not built yet" in html
    for group in item.placeholder.cli:
        assert f"<code>{group}</code>" in html
    assert "<table" not in html  # no fake data


def test_overview_shows_real_state(admin_client: TestClient, web_platform: tuple[Platform, str]) -> None:
    platform, _ = web_platform
    html = admin_client.get("/").text
    assert "/static/vendor/plotly.min.js" not in html  # nothing to chart yet
    assert "No queue holds any job yet" in html
    assert html.count("healthy") == 3  # database, objects, jobs
    assert '<p class="stat-value" data-testid="user-count">1</p>' in html
    assert "web.login" in html and "user.create" in html  # recent audit events
    platform.jobs.enqueue("inference", {"n": 1})
    platform.jobs.enqueue("inference", {"n": 2})
    platform.jobs.enqueue("training", {"n": 3})
    html = admin_client.get("/").text
    assert "/static/vendor/plotly.min.js" in html
    assert '<script type="application/json" id="queue-chart-data">' in html
    assert '"queues": ["inference", "training"]' in html
    assert '{"counts": [2, 1], "state": "queued"}' in html


def test_logout_clears_the_session(admin_client: TestClient, web_platform: tuple[Platform, str]) -> None:
    r = admin_client.post("/logout")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert f'{COOKIE_NAME}=""' in r.headers["set-cookie"]
    assert admin_client.get("/").status_code == 303
    with web_platform[0].session() as s:
        assert [e.action for e in audit.query(s, action="web.")][:2] == ["web.logout", "web.login"]


def test_revoked_token_ends_the_session(admin_client: TestClient, web_platform: tuple[Platform, str]) -> None:
    platform, token = web_platform
    with platform.session() as s:
        users.revoke_token(s, token.split("_", 2)[1])
    r = admin_client.get("/ui/data")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/ui/data"


def test_forged_cookie_is_refused(client: TestClient) -> None:
    client.cookies.set(COOKIE_NAME, "abc.99999999999.deadbeef")
    r = client.get("/")
    assert r.status_code == 303
    assert f'{COOKIE_NAME}=""' in r.headers["set-cookie"]


# -- access control --------------------------------------------------------------------------------------
def test_viewer_sees_stages_but_not_admin(client: TestClient, web_platform: tuple[Platform, str]) -> None:
    token = issue_token(web_platform[0], "vera", "viewer")
    assert client.post("/login", data={"token": token}).status_code == 303
    home = client.get("/")
    assert home.status_code == 200
    # every stage a viewer may see (labeling is for annotators: Labels is left out)
    visible = [item.href for item in STAGES if item.permission in (Permission.VIEW, Permission.BROWSE)]
    assert [href for href, _ in parts(home.text).nav_links] == visible and "/ui/labels" not in visible
    assert "The audit log is visible to admins" in home.text
    for item in ADMIN:
        r = client.get(item.href)
        assert r.status_code == 403, item.href
        page = parts(r.text)
        assert page.h1 == "Not allowed"
        assert "vera (viewer) may not admin" in r.text
        assert "text/html" in r.headers["content-type"]


def test_api_still_answers_json(admin_client: TestClient) -> None:
    r = admin_client.get("/v1/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert admin_client.get("/livez").json() == {"status": "ok"}


def test_unknown_ui_page_is_an_html_404(admin_client: TestClient) -> None:
    r = admin_client.get("/ui/no/such/page")
    assert r.status_code == 404
    page = parts(r.text)
    assert page.h1 == "Page not found" and page.title == "Page not found · medcycle"
    assert "/ui/no/such/page" in r.text
    assert page.nav_links  # the layout, with navigation, for a logged-in visitor


def test_unexpected_errors_render_a_page_without_traceback(web_platform: tuple[Platform, str]) -> None:
    app = create_app(web_platform[0])

    def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/ui/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.post("/login", data={"token": web_platform[1]})
        r = c.get("/ui/boom")
    assert r.status_code == 500
    assert parts(r.text).h1 == "Something went wrong"
    assert "kaboom" not in r.text and "Traceback" not in r.text


# -- admin pages -----------------------------------------------------------------------------------------
def test_users_page_lists_users_and_tokens_without_secrets(
    admin_client: TestClient, web_platform: tuple[Platform, str]
) -> None:
    platform, token = web_platform
    secret = issue_token(platform, "ana", "annotator")
    with platform.session() as s:
        users.create_user(s, "eve", "viewer", email="<script>alert(1)</script>@example.org")
    html = admin_client.get("/ui/admin/users").text
    for name in ("admin", "ana", "eve"):
        assert f"<td>{name}</td>" in html
    assert token.split("_", 2)[1] in html  # the token id is shown …
    for plaintext in (token, secret):
        assert plaintext.split("_", 2)[2] not in html  # … never the secret
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # autoescaped


def test_audit_log_filters_by_actor_and_action(admin_client: TestClient, web_platform: tuple[Platform, str]) -> None:
    platform, _ = web_platform
    with platform.session() as s:
        audit.record(s, "ana", "object.read", target_kind="object", target_id="d" * 64)
        audit.record(s, "ben", "object.write", target_kind="object", target_id="e" * 64)
        audit.record(s, "ana", "dataset.pull", target_kind="dataset", target_id="chest-xray")
    html = admin_client.get("/ui/admin/audit?actor=ana").text
    assert "d" * 64 in html and "chest-xray" in html and "e" * 64 not in html
    html = admin_client.get("/ui/admin/audit?action=object.").text
    assert "d" * 64 in html and "e" * 64 in html and "chest-xray" not in html
    html = admin_client.get("/ui/admin/audit?actor=ana&action=object.").text
    assert "d" * 64 in html and "e" * 64 not in html and "chest-xray" not in html
    assert 'value="ana"' in html and 'value="object."' in html
    assert "No events match these filters" in admin_client.get("/ui/admin/audit?actor=nobody").text
    assert admin_client.get("/ui/admin/audit?limit=0").status_code == 422


def test_queues_page_shows_stats_and_recent_jobs(admin_client: TestClient, web_platform: tuple[Platform, str]) -> None:
    platform, _ = web_platform
    assert "No queue holds any job yet" in admin_client.get("/ui/admin/queues").text
    jobs = [platform.jobs.enqueue("inference", {"i": i}) for i in range(3)]
    taken = platform.jobs.take("inference", "worker-7")
    platform.jobs.fail(taken[0], "out of memory", retry=False)
    html = admin_client.get("/ui/admin/queues").text
    assert "<code>inference</code>" in html
    for job in jobs:
        assert job.id in html
    assert "out of memory" in html and "worker-7" in html


def test_store_page_counts_objects_with_a_bound(
    admin_client: TestClient, web_platform: tuple[Platform, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, _ = web_platform
    html = admin_client.get("/ui/admin/store").text
    assert platform.objects.url in html
    assert '<dd data-testid="object-count">0</dd>' in html
    for i in range(3):
        platform.objects.put(f"object {i}".encode())
    assert '<dd data-testid="object-count">3</dd>' in admin_client.get("/ui/admin/store").text
    monkeypatch.setattr(admin_pages, "OBJECT_COUNT_LIMIT", 2)
    html = admin_client.get("/ui/admin/store").text
    assert '<dd data-testid="object-count">2+</dd>' in html
    assert "Counting stops at 2 objects" in html


# -- auth off and assets ---------------------------------------------------------------------------------
def test_auth_off_shows_pages_as_the_local_admin(tmp_path: Path) -> None:
    platform = make_platform(tmp_path / "home", auth_enabled=False)
    platform.init()
    try:
        with TestClient(create_app(platform), follow_redirects=False) as c:
            r = c.get("/")
            assert r.status_code == 200
            assert '<span class="who-name">local</span>' in r.text
            assert "authentication off" in r.text
            assert "/logout" not in r.text
            for href in NAV_PATHS:
                assert c.get(href).status_code == 200, href
            assert c.get("/login?next=/ui/data").headers["location"] == "/ui/data"
    finally:
        platform.close()


def test_plotly_is_served_from_the_installed_package(client: TestClient) -> None:
    r = client.get("/static/vendor/plotly.min.js")  # static files need no login
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "max-age=" in r.headers["cache-control"]
    assert len(r.content) > 1_000_000 and b"plotly" in r.content[:2000].lower()
    again = client.get("/static/vendor/plotly.min.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", ["css/medcycle.css", "js/charts.js", "icon.svg"])
def test_own_static_files(client: TestClient, path: str) -> None:
    assert client.get(f"/static/{path}").status_code == 200


def test_nav_keys_are_unique() -> None:
    assert len(BY_KEY) == len(STAGES) + len(ADMIN)
    assert len({i.href for i in (*STAGES, *ADMIN)}) == len(BY_KEY)
