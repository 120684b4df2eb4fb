"""The web console in a real browser: headless Chromium (Selenium) against the running storage-service.

Each test starts gunicorn, seeds data through the services, signs in with a real token and checks what
the page shows against what the public API answers. Screenshots of each page go to var/screenshots/.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from storage_core.models import Bucket, BucketTraffic
from storage_core.timeutil import now_us, recent_months, year_month_of
from tests.conftest import make_bucket, put
from tests.support.browser import Browser
from tests.support.servers import GunicornServer

KiB, MiB = 1024, 1024 * 1024
CONSOLE_PART_SIZE = 5 * MiB
STORAGE = pytest.mark.profile("storage")
pytestmark = [pytest.mark.slow]


@pytest.fixture
def server(settings, local_location) -> Iterator[GunicornServer]:
    running = GunicornServer(settings, workers=2, extra_env={"STORAGE_CONSOLE_PART_SIZE": str(CONSOLE_PART_SIZE),
                                                             "STORAGE_LOG_LEVEL": "INFO"})  # access lines
    yield running
    running.stop()


def api(server: GunicornServer, headers: dict[str, str], method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, server.url + "/api/v1" + path, headers=headers, timeout=30, **kwargs)
    assert response.status_code < 300, (path, response.status_code, response.text[:300])
    return response.json() if response.content else None


def sign_in(browser: Browser, server: GunicornServer, token: str, screenshot: str | None = None) -> None:
    browser.driver.get(server.url + "/console/")
    field = browser.wait_for("#token")
    assert browser.active() == field  # the page puts the focus where the token goes
    if screenshot:
        browser.screenshot(screenshot)
    field.send_keys(token + Keys.ENTER)  # the form submits from the keyboard
    browser.wait_loaded("buckets")


def go(browser: Browser, server: GunicornServer, route: str, page: str) -> None:
    browser.driver.execute_script("const m = document.getElementById('main'); if (m) m.dataset.page = '';")
    browser.driver.get(f"{server.url}/console/#{route}")
    browser.wait_loaded(page)


def no_script_errors(browser: Browser) -> None:
    """No CSP violation and no uncaught exception in the page's console."""
    bad = [m["message"] for m in browser.console_messages()
           if "Content Security Policy" in m["message"] or "Uncaught" in m["message"]
           or "Refused to" in m["message"]]
    assert not bad, bad


def fits(browser: Browser, width: int) -> None:
    """Nothing sticks out sideways: wide tables scroll inside their own region."""
    scroll_width = browser.driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width}px wide in a {width}px window"


def seed_quota_buckets(storage, auth, server) -> dict[str, str]:
    """Olivia's two buckets with reads that spend all of the charged quota and part of the monthly one."""
    make_bucket(storage, "olivia-photos", owner="olivia", visibility="private", charged_read_quota=300 * KiB,
                monthly_free_read_quota=1 * MiB, free_read_quota=5 * MiB)
    make_bucket(storage, "olivia-docs", owner="olivia", visibility="private", charged_read_quota=0,
                monthly_free_read_quota=2 * MiB, free_read_quota=0)
    make_bucket(storage, "mallory-data", owner="mallory", visibility="private")
    put(storage, "olivia-photos", "albums/cat.bin", os.urandom(200 * KiB))
    put(storage, "olivia-docs", "notes.txt", b"n" * 50_000)
    put(storage, "mallory-data", "secret.txt", b"m" * 1000)
    olivia = auth.headers("olivia")
    for _ in range(3):  # 600 KiB: 300 charged, then 300 of the monthly free quota
        assert requests.get(f"{server.url}/api/v1/buckets/olivia-photos/objects/albums/cat.bin", headers=olivia,
                            timeout=30).status_code == 200
    assert requests.get(f"{server.url}/api/v1/buckets/olivia-docs/objects/notes.txt", headers=olivia,
                        timeout=30).status_code == 200
    return olivia


# ---- pages, tokens, what an owner sees ---------------------------------------------------------------


@STORAGE
def test_sign_in_and_the_gauges_are_the_api_quota(server, storage, auth, browser):
    olivia = seed_quota_buckets(storage, auth, server)
    sign_in(browser, server, auth.token("olivia"), screenshot="sign-in")
    cards = {card.get_attribute("data-bucket"): card for card in browser.find_all("#bucket-list .card")}
    assert set(cards) == {"olivia-docs", "olivia-photos"}  # mallory's bucket is absent, not greyed out
    assert "mallory" not in browser.driver.page_source
    assert browser.find("#quota-month").text == year_month_of(now_us())
    for name, card in cards.items():
        quota = api(server, olivia, "GET", f"/buckets/{name}/read-quota")
        expected = {
            "charged": (quota["charged_consumed_size"], quota["charged_quota_size"] - quota["charged_consumed_size"]),
            "monthly-free": (quota["monthly_free_consumed_size"],
                             quota["monthly_free_quota_size"] - quota["monthly_free_consumed_size"]),
            "one-time-free": (quota["free_consumed_size"], quota["sp_free_quota_size"]),
        }
        shown = {g.get_attribute("data-gauge"): (int(g.get_attribute("data-consumed")),
                                                 int(g.get_attribute("data-left")))
                 for g in card.find_elements("css selector", ".gauge")}
        assert shown == expected, name
        for gauge in card.find_elements("css selector", ".gauge"):
            label = gauge.find_element("css selector", "svg").get_attribute("aria-label")
            assert "consumed" in label or "none this month" in label
    photos = {g.get_attribute("data-gauge"): g for g in cards["olivia-photos"].find_elements("css selector", ".gauge")}
    assert photos["charged"].get_attribute("data-left") == "0"  # 300 KiB of 300 KiB spent
    assert "consumed 300.0 KiB" in photos["charged"].text and "left 0 B" in photos["charged"].text
    assert "consumed 300.0 KiB" in photos["monthly-free"].text and "left 724.0 KiB" in photos["monthly-free"].text
    browser.screenshot("buckets")
    fits(browser, 1280)

    # another owner's bucket by its address: the API's refusal, and none of its figures
    go(browser, server, "/buckets/mallory-data", "buckets")
    alert = browser.wait_for("#alert")
    assert "olivia" in alert.text or "not allowed" in alert.text.lower() or "forbidden" in alert.text.lower()
    assert not browser.find_all(".gauge")
    # signing out forgets the token: the next page asks for one again
    go(browser, server, "/buckets", "buckets")
    browser.find("#sign-out").click()
    browser.wait_for("#token")
    assert browser.driver.execute_script("return sessionStorage.length") == 0
    assert browser.driver.get_cookies() == []  # no cookie ever carried the token
    no_script_errors(browser)


@STORAGE
def test_a_refused_token_is_not_kept(server, storage, auth, browser):
    browser.driver.get(server.url + "/console/")
    browser.wait_for("#token").send_keys("not-a-token" + Keys.ENTER)
    alert = browser.wait_for("#alert")
    assert alert.text.startswith("Sign-in failed")
    assert browser.driver.execute_script("return sessionStorage.length") == 0
    assert browser.find("#token").is_displayed()


def seed_history(storage, bucket: str) -> list[str]:
    """Earlier months as their reads left them (bucket_traffic rows); returns the 12 months, newest first."""
    months = recent_months(year_month_of(now_us()), 12)
    with storage.session_factory()() as session, session.begin():
        bucket_id = session.scalar(select(Bucket.id).where(Bucket.name == bucket))
        for month, (charged, monthly, free) in {months[2]: (300 * KiB, 1 * MiB, 2 * MiB),
                                                 months[5]: (300 * KiB, 200 * KiB, 0),
                                                 months[11]: (0, 0, 3 * MiB)}.items():
            session.add(BucketTraffic(bucket_id=bucket_id, year_month=month, charged_quota_size=300 * KiB,
                                      charged_consumed_size=charged, monthly_free_quota_size=1 * MiB,
                                      monthly_free_consumed_size=monthly, free_quota_remaining=5 * MiB,
                                      free_consumed_size=free))
    return months


@STORAGE
def test_chart_records_paging_and_csv_export(server, storage, auth, browser):
    make_bucket(storage, "olivia-photos", owner="olivia", visibility="private", charged_read_quota=300 * KiB,
                monthly_free_read_quota=1 * MiB, free_read_quota=5 * MiB)
    months = seed_history(storage, "olivia-photos")
    put(storage, "olivia-photos", "a/b,\"c\".bin", b"x" * 2000)
    olivia = auth.headers("olivia")
    for i in range(30):
        headers = {**olivia, "Range": f"bytes=0-{i}"}
        assert requests.get(f"{server.url}/api/v1/buckets/olivia-photos/objects/a/b,%22c%22.bin", headers=headers,
                            timeout=30).status_code == 206
    sign_in(browser, server, auth.token("olivia"))

    # the bucket page: this month's gauges and the 12-month stacked chart
    browser.find("a.bucket-link").click()
    browser.wait_loaded("buckets")
    browser.wait_for("#history-chart")
    history = api(server, olivia, "GET", "/buckets/olivia-photos/read-quota/history", params={"months": 12})
    assert [m["year_month"] for m in history] == months
    bars = browser.find_all("#history-chart g.bar")
    assert [b.get_attribute("data-month") for b in bars] == months[::-1]  # oldest on the left
    for bar, month in zip(bars, history[::-1], strict=True):
        assert int(bar.get_attribute("data-consumed")) == month["consumed_size"]
        segments = {r.get_attribute("data-series"): int(r.get_attribute("data-bytes"))
                    for r in bar.find_elements("css selector", "rect")}
        assert segments == {k: month[k] for k in ("charged_consumed_size", "monthly_free_consumed_size",
                                                  "free_consumed_size") if month[k]}
    heights = {b.get_attribute("data-month"): sum(float(r.get_attribute("height"))
                                                  for r in b.find_elements("css selector", "rect")) for b in bars}
    assert heights[months[2]] > heights[months[11]] > heights[months[5]] > heights[months[0]] > 0
    browser.driver.execute_script("window.scrollTo(0, 0)")
    browser.screenshot("bucket")
    fits(browser, 1280)
    browser.find("#history-chart").find_element("xpath", "..").find_element("css selector", "summary").click()
    table_rows = browser.find_all("#history-table tbody tr")
    assert [r.find_element("css selector", "th").text for r in table_rows] == months

    # read records: a page of 25, the next (last) one, back again; the same rows as the API's pages
    browser.find("#tab-records").click()
    browser.wait_loaded("buckets")
    browser.wait_for("#records-table")
    Select(browser.find("#page-size")).select_by_value("25")
    browser.find("#records-show").click()
    browser.wait(lambda d: "size=25" in d.current_url and len(browser.find_all("#records-table tbody tr")) == 25)
    # the page's default range: this UTC month
    now = dt.datetime.now(dt.UTC)
    start = dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC)
    end = dt.datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=dt.UTC)
    query = {"max_records": 25, "start_timestamp_us": int(start.timestamp()) * 1_000_000,
             "end_timestamp_us": int(end.timestamp()) * 1_000_000}
    first = api(server, olivia, "GET", "/buckets/olivia-photos/read-records", params=query)
    shown = [int(r.get_attribute("data-timestamp")) for r in browser.find_all("#records-table tbody tr")]
    assert shown == [r["timestamp_us"] for r in first["read_records"]]
    cells = browser.find("#records-table tbody tr").find_elements("css selector", "td")
    assert cells[1].text == 'a/b,"c".bin' and cells[3].text == "olivia"
    assert browser.find("#page-number").text == "Page 1"
    assert not browser.find("#prev-page").is_enabled()
    browser.screenshot("records")
    browser.find("#next-page").click()
    browser.wait(lambda d: browser.find("#page-number").text == "Page 2 (last)")
    second = api(server, olivia, "GET", "/buckets/olivia-photos/read-records",
                 params={**query, "cursor": first["next_cursor"]})
    assert [int(r.get_attribute("data-timestamp")) for r in browser.find_all("#records-table tbody tr")] == [
        r["timestamp_us"] for r in second["read_records"]]
    assert len(second["read_records"]) == 5 and not browser.find("#next-page").is_enabled()
    browser.find("#prev-page").click()
    browser.wait(lambda d: browser.find("#page-number").text == "Page 1")
    assert [int(r.get_attribute("data-timestamp")) for r in browser.find_all("#records-table tbody tr")] == shown

    # CSV export: every page of the range in one file, the API's rows
    browser.find("#export-csv").click()
    exported = browser.wait_for_download("read-records-olivia-photos.csv")
    browser.wait(lambda d: browser.find("#export-status").text == "Exported 30 records.")
    rows = list(csv.reader(io.StringIO(exported.read_text(encoding="utf-8"), newline="")))
    assert rows[0] == ["object_name", "object_id", "checksum", "account", "timestamp_us", "read_size"]
    records = first["read_records"] + second["read_records"]
    assert rows[1:] == [[r["object_name"], str(r["object_id"]), r["checksum"], r["account"], str(r["timestamp_us"]),
                         str(r["read_size"])] for r in records]
    assert [int(row[5]) for row in rows[1:]] == list(range(1, 31))
    no_script_errors(browser)


# ---- the object browser --------------------------------------------------------------------------------


def objects_of(server, headers, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    listing = api(server, headers, "GET", f"/buckets/{bucket}/objects", params={"prefix": prefix})
    return {o["key"]: o for o in listing["objects"]}


@STORAGE
def test_object_browser_folders_upload_download_and_presigned_link(server, storage, auth, browser, tmp_path):
    make_bucket(storage, "olivia-photos", owner="olivia", visibility="private")
    hostile = "albums/<img src=x onerror=alert(1)>.txt"
    put(storage, "olivia-photos", hostile, b"not html")
    put(storage, "olivia-photos", "albums/2026/june.jpg", os.urandom(3000))
    put(storage, "olivia-photos", "readme.md", b"# photos")
    olivia = auth.headers("olivia")
    sign_in(browser, server, auth.token("olivia"))
    go(browser, server, "/buckets/olivia-photos/objects", "buckets")
    browser.wait_for("#objects-table")
    assert [r.get_attribute("data-prefix") for r in browser.find_all("#objects-table tr.folder")] == ["albums/"]
    assert [r.get_attribute("data-key") for r in browser.find_all("#objects-table tr.object")] == ["readme.md"]
    browser.find("a.folder-link").click()
    browser.wait(lambda d: [r.get_attribute("data-key") for r in browser.find_all("#objects-table tr.object")] == [
        hostile])
    assert [r.get_attribute("data-prefix") for r in browser.find_all("#objects-table tr.folder")] == ["albums/2026/"]
    row = browser.find("#objects-table tr.object")
    assert row.get_attribute("data-key") == hostile
    assert row.find_element("css selector", "td.name").text == "<img src=x onerror=alert(1)>.txt"
    assert not browser.find_all("#objects-table img")  # the name was text, never markup

    # upload through the page (one PUT below the part size), with its progress bar
    data = os.urandom(700 * KiB)
    source = tmp_path / "beach photo.bin"
    source.write_bytes(data)
    browser.find("#upload-input").send_keys(str(source))
    browser.find("#upload-submit").click()
    item = browser.wait_for("#upload-list li.upload")
    browser.wait(lambda d: item.get_attribute("data-state") == "done", message=item.text)
    assert browser.find("#upload-list progress").get_attribute("value") == str(len(data))
    stored = objects_of(server, olivia, "olivia-photos", "albums/")["albums/beach photo.bin"]
    assert stored["checksum"] == hashlib.sha256(data).hexdigest() and stored["size"] == len(data)
    browser.wait(lambda d: any(r.get_attribute("data-key") == "albums/beach photo.bin"
                               for r in browser.find_all("#objects-table tr.object")))
    browser.screenshot("objects")
    fits(browser, 1280)

    # download it again through the page (a presigned link the browser follows)
    uploaded = next(r for r in browser.find_all("#objects-table tr.object")
                    if r.get_attribute("data-key") == "albums/beach photo.bin")
    uploaded.find_element("css selector", "button.download").click()
    assert browser.wait_for_download("beach photo.bin").read_bytes() == data

    # copy a presigned link: anyone holding it can download the object
    uploaded.find_element("css selector", "button.copy-link").click()
    browser.wait(lambda d: browser.find("#presigned-url").get_attribute("value").startswith(server.url))
    link = browser.find("#presigned-url").get_attribute("value")
    assert "X-Storage-Signature=" in link
    assert requests.get(link, timeout=30).content == data
    assert requests.get(f"{server.url}/api/v1/buckets/olivia-photos/objects/albums/beach%20photo.bin",
                        timeout=30).status_code in (401, 403, 404)  # private: the link is what opened it
    no_script_errors(browser)


@STORAGE
def test_a_large_upload_goes_in_parallel_parts(server, storage, auth, browser, tmp_path):
    make_bucket(storage, "olivia-photos", owner="olivia", visibility="private")
    data = os.urandom(2 * CONSOLE_PART_SIZE + 123_457)  # three parts: 5 MiB, 5 MiB and the rest
    source = tmp_path / "video.bin"
    source.write_bytes(data)
    sign_in(browser, server, auth.token("olivia"))
    go(browser, server, "/buckets/olivia-photos/objects", "buckets")
    browser.wait_for("#upload-input").send_keys(str(source))
    browser.find("#upload-submit").click()
    item = browser.wait_for("#upload-list li.upload")
    browser.wait(lambda d: item.get_attribute("data-state") in ("done", "failed"), timeout=60)
    assert item.get_attribute("data-state") == "done", item.text
    stored = objects_of(server, auth.headers("olivia"), "olivia-photos")["video.bin"]
    assert stored["checksum"] == hashlib.sha256(data).hexdigest()
    log = server.log.read_text()
    parts = re.findall(r'"PUT /api/v1/buckets/olivia-photos/uploads/[^/]+/parts/(\d+) 200"', log)
    assert sorted(map(int, parts)) == [1, 2, 3]
    assert "PUT /api/v1/buckets/olivia-photos/objects/video.bin" not in log


# ---- locations and files (admins) -------------------------------------------------------------------------


@STORAGE
def test_locations_and_file_pages(server, storage, auth, browser, tmp_path):
    storage.location_service().update("hot", {"capacity": 10 * MiB})
    storage.location_service().create({"name": "cold", "plugin": "local", "tier": "cold", "priority": 3,
                                       "enabled": True, "config": {"root": str(tmp_path / "cold")}})
    make_bucket(storage, "olivia-photos", owner="olivia", visibility="private", locations=["hot"])
    stored = put(storage, "olivia-photos", "albums/cat.bin", os.urandom(2 * MiB))
    storage.file_service().add_copy(stored["checksum"], "cold")
    admin = auth.admin
    sign_in(browser, server, auth.token("admin", ["admin"]))
    assert browser.find("#nav-locations").is_displayed()  # admins only
    browser.find("#nav-locations").click()
    browser.wait_loaded("locations")
    expected = {loc["name"]: loc for loc in api(server, admin, "GET", "/storage-locations")["storage_locations"]}
    rows = {r.get_attribute("data-location"): r for r in browser.find_all("#locations-table tbody tr")}
    assert list(rows) == list(expected) == ["hot", "cold"]  # serving order
    for name, row in rows.items():
        cells = [c.text for c in row.find_elements("css selector", "th, td")]
        location = expected[name]
        # access and purpose come with nearline locations; a server without them shows the defaults
        assert cells[:7] == [name, "local", location["tier"], location.get("access", "online"),
                             location.get("purpose", "—"), str(location["priority"]), "yes"]
        usage = row.find_element("css selector", ".usage")
        assert int(usage.get_attribute("data-used")) == location["used_size"] == 2 * MiB
        assert cells[8] == str(location["file_count"]) and cells[9] == "ok"
    assert rows["hot"].find_element("css selector", ".usage").get_attribute("data-capacity") == str(10 * MiB)
    assert "2.00 MiB of 10.0 MiB (20%)" in rows["hot"].text
    assert "no capacity set" in rows["cold"].text
    browser.screenshot("locations")

    go(browser, server, f"/files/{stored['checksum']}", "files")
    file = api(server, admin, "GET", f"/files/{stored['checksum']}")
    assert browser.find("#file-checksum").text == stored["checksum"]
    copies = [[c.text for c in r.find_elements("css selector", "th, td")]
              for r in browser.find_all("#copies-table tbody tr")]
    assert copies == [[c["location"], c["tier"], c.get("access", "online"), str(c["priority"]), c["state"], "—"]
                      for c in file["copies"]]
    assert not browser.find_all("#restore")  # no nearline copy: nothing to restore
    assert [li.text for li in browser.find_all("#references li")] == ["olivia-photos / albums/cat.bin"]
    browser.screenshot("file")
    no_script_errors(browser)

    # an owner does not get the admin pages
    browser.find("#sign-out").click()
    sign_in(browser, server, auth.token("olivia"))
    assert not browser.find("#nav-locations").is_displayed()


# ---- keyboard and narrow windows --------------------------------------------------------------------------


def tab_through(browser: Browser, count: int) -> list[str]:
    """Press Tab ``count`` times; what had the focus each time (id, class or text)."""
    seen = []
    for _ in range(count):
        ActionChains(browser.driver).send_keys(Keys.TAB).perform()
        element = browser.active()
        seen.append(element.get_attribute("id") or element.get_attribute("class") or element.text)
    return seen


@STORAGE
def test_keyboard_reaches_the_main_controls_and_narrow_windows_fit(server, storage, auth, browser):
    make_bucket(storage, "olivia-photos", owner="olivia", visibility="private")
    put(storage, "olivia-photos", "readme.md", b"# photos")
    browser.driver.get(server.url + "/console/")
    browser.wait_for("#token")
    # before the token field there is only the skip link (the menus appear once signed in)
    ActionChains(browser.driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert browser.active().get_attribute("id") == "skip-link"
    assert tab_through(browser, 1) == ["token"]
    browser.find("#token").send_keys(auth.token("olivia") + Keys.ENTER)
    browser.wait_loaded("buckets")
    assert browser.active().get_attribute("id") == "page-title"  # the new page's heading has the focus
    focused = tab_through(browser, 1)
    assert focused == ["bucket-link"]
    ActionChains(browser.driver).send_keys(Keys.ENTER).perform()  # follow the link from the keyboard
    browser.wait(lambda d: d.current_url.endswith("#/buckets/olivia-photos"))
    browser.wait_for("#history-chart")
    assert tab_through(browser, 2) == ["tab-overview", "tab-objects"]
    ActionChains(browser.driver).send_keys(Keys.ENTER).perform()
    browser.wait(lambda d: d.current_url.endswith("/objects"))
    browser.wait_for("#objects-table tr.object")
    reached = tab_through(browser, 14)
    for control in ("upload-input", "upload-submit", "link-expiry", "download", "copy-link"):
        assert control in reached, reached
    # every form control has a label
    unlabelled = browser.driver.execute_script(
        "return [...document.querySelectorAll('input, select')].filter(e => !e.labels.length &&"
        " !e.getAttribute('aria-label')).map(e => e.id)")
    assert unlabelled == []

    # a narrow window: the page reflows, wide tables scroll inside their own region
    for route, name in (("/buckets", "buckets-narrow"), ("/buckets/olivia-photos/objects", "objects-narrow")):
        go(browser, server, route, "buckets")
        browser.screenshot(name, width=400, height=800)
        fits(browser, 400)
    browser.viewport(1280, 800)
    no_script_errors(browser)


# ---- what is served --------------------------------------------------------------------------------------

ASSETS = Path(__file__).resolve().parents[1] / "storage_core" / "console" / "static"


@STORAGE
def test_console_responses_carry_a_strict_policy_and_no_cookie(client):
    page = client.get("/console/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in page.headers
    html = page.get_data(as_text=True)
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # no inline script
    assert 'content="67108864"' in html  # STORAGE_CONSOLE_PART_SIZE's default
    assert client.get("/console").status_code in (301, 308)
    for asset, kind in (("console.css", "text/css"), ("js/app.js", "javascript"), ("icon.svg", "image/svg+xml")):
        answer = client.get(f"/console/static/{asset}")
        assert answer.status_code == 200 and kind in answer.content_type
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert "/console/" not in str(client.get("/openapi.json").json["paths"])


def test_the_console_never_parses_text_as_html():
    """Every script builds the page with DOM calls: nothing that parses HTML or evaluates code."""
    scripts = sorted(ASSETS.glob("js/*.js"))
    assert len(scripts) >= 4
    for script in scripts:
        source = script.read_text().replace('"http://www.w3.org/2000/svg"', "SVG namespace")
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                          "new Function", "setTimeout(\"", "https://", "http://"):
            assert forbidden not in source, (script.name, forbidden)


def test_the_console_is_absent_from_the_downloader(settings, monkeypatch):
    from storage_core.app import create_app

    monkeypatch.delenv("STORAGE_PROFILES", raising=False)
    downloader = create_app(["downloader"], settings=settings).test_client()
    for path in ("/console/", "/console/static/js/app.js"):
        assert downloader.get(path).status_code == 404


@STORAGE
def test_the_file_page_shows_nearline_copies_and_restores(server, storage, auth, browser, tmp_path):
    nearline = "access" in storage.location_service().get("hot")  # locations say their access where supported
    if nearline:
        storage.location_service().create({
            "name": "tape", "plugin": "local", "tier": "cold", "priority": 0, "enabled": True, "access": "nearline",
            "config": {"root": str(tmp_path / "tape"), "restore_seconds": 0.5}})
        storage.location_service().create({
            "name": "cache", "plugin": "local", "tier": "hot", "priority": 0, "enabled": True, "purpose": "cache",
            "capacity": 10 * MiB, "config": {"root": str(tmp_path / "cache")}})
    make_bucket(storage, "archive", owner="olivia", visibility="private", locations=["tape" if nearline else "hot"])
    stored = put(storage, "archive", "2019/scan.tif", os.urandom(300 * KiB))
    sign_in(browser, server, auth.token("admin", ["admin"]))
    go(browser, server, f"/files/{stored['checksum']}", "files")
    if not nearline:  # a server without the nearline tier: every copy is online, nothing to restore
        assert [r.find_elements("css selector", "td")[1].text for r in browser.find_all("#copies-table tbody tr")] == [
            "online"]
        assert not browser.find_all("#restore")
        return
    browser.find("#nav-locations").click()
    browser.wait_loaded("locations")
    rows = {r.get_attribute("data-location"): [c.text for c in r.find_elements("css selector", "th, td")]
            for r in browser.find_all("#locations-table tbody tr")}
    assert rows["tape"][3:5] == ["nearline", "storage"] and rows["cache"][3:5] == ["online", "cache"]
    go(browser, server, f"/files/{stored['checksum']}", "files")
    copy = browser.find("#copies-table tbody tr")
    assert [c.text for c in copy.find_elements("css selector", "th, td")][:3] == ["tape", "cold", "nearline"]
    browser.find("#restore").click()
    state = browser.wait(lambda d: browser.find("#restore-state").text or None)
    assert re.fullmatch(r"Restore: (restoring|queued|available.*)", state), state
    # the restore completes in the background: the file then has a cached copy with its expiry
    deadline = time.time() + 30
    while not any(c["state"] == "cached" for c in api(server, auth.admin, "GET", f"/files/{stored['checksum']}")[
            "copies"]):
        assert time.time() < deadline, "the restore never completed"
        time.sleep(0.2)
    browser.driver.refresh()  # the token survives a reload: it is the tab's
    browser.wait_loaded("files")
    cached = [r for r in browser.find_all("#copies-table tbody tr") if r.get_attribute("data-state") == "cached"]
    assert len(cached) == 1 and cached[0].find_elements("css selector", "td")[-1].text.endswith("UTC")
    browser.find("#restore").click()
    browser.wait(lambda d: browser.find("#restore-state").text.startswith("Restore: available, available until"))
    browser.screenshot("file-nearline")
    no_script_errors(browser)
