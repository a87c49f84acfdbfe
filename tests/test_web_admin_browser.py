"""The admin pages in a real browser: Debian's chromium, headless, driven through
selenium and chromium-driver.  It logs in, adds an account, sees a queued message and
retries it, and reaches no page without logging in.  It also takes the screenshots of
the dashboard and accounts pages at desktop (1280) and phone (390) widths; with
``MAILSUITE_SCREENSHOTS=DIR`` they are written there (docs/screenshots/ holds the
committed ones)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.admin import ADMIN, ADMIN_PW
from tests.support.waiting import wait_for

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, DRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing for the browser tests: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")


def make_driver(profile: Path, width: int, height: int, phone: bool = False):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not go to the network
    os.environ.setdefault("SE_AVOID_STATS", "true")
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--hide-scrollbars",
              # The test server's certificate is self-signed for mail.example.test and 127.0.0.1.
              "--ignore-certificate-errors",
              f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        o.add_argument(a)
    if phone:
        o.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2},
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        })
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    d.set_page_load_timeout(30)
    return d


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    _need_browser()
    d = make_driver(tmp_path / "profile", 1280, 900)
    try:
        yield d
    finally:
        d.quit()


def base(server) -> str:  # type: ignore[no-untyped-def]
    return f"https://127.0.0.1:{server.ports['https']}"


def login(d, server) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    d.get(base(server) + "/admin/login")
    d.find_element(By.NAME, "username").send_keys(ADMIN)
    d.find_element(By.NAME, "password").send_keys(ADMIN_PW)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: d.current_url.endswith("/admin/"), what="the dashboard after login")


def test_browser_reaches_no_page_without_logging_in(browser, admin_setup) -> None:
    srv = admin_setup.server
    for path in ("/admin/", "/admin/accounts", "/admin/aliases", "/admin/queue", "/admin/dns"):
        browser.get(base(srv) + path)
        assert browser.current_url == base(srv) + "/admin/login", path
        assert "Log in" in browser.title
    # Plain HTTP: refused outright, the login form is never offered there.
    browser.get(f"http://127.0.0.1:{srv.ports['http']}/admin/login")
    assert "only over HTTPS" in browser.page_source


def test_browser_logs_in_adds_an_account_and_retries_a_queued_message(browser, admin_setup) -> None:
    from selenium.webdriver.common.by import By

    srv = admin_setup.server
    login(browser, srv)
    assert "Dashboard" in browser.title
    # Add an account with the form.
    browser.find_element(By.LINK_TEXT, "Accounts").click()
    add = browser.find_element(By.CSS_SELECTOR, "form.add")
    add.find_element(By.NAME, "address").send_keys("erin@example.test")
    add.find_element(By.NAME, "password").send_keys("erin-pw")
    add.find_element(By.NAME, "quota").send_keys("500M")
    add.find_element(By.CSS_SELECTOR, "button").click()
    wait_for(lambda: "Added erin@example.test." in browser.page_source, what="the added account")
    assert "erin@example.test" in (srv.root / "users").read_text()
    # The queued message is listed with its last error; retry it once the peer accepts.
    browser.find_element(By.LINK_TEXT, "Queue").click()
    assert "someone@remote.test" in browser.page_source
    assert "451 4.7.1 greylisted" in browser.page_source
    admin_setup.script.rcpt = lambda a: "250 2.1.5 Ok"
    browser.find_element(By.XPATH, "//button[text()='Retry now']").click()
    wait_for(lambda: "retrying now" in browser.page_source, what="the retry flash")
    wait_for(lambda: "status=sent" in srv.log(), what="delivery after the retry", server=srv)
    browser.get(base(srv) + "/admin/queue")
    assert "0 message(s) in the queue" in browser.page_source
    assert len(admin_setup.peer.received) == 1


def _full_height(d) -> int:  # type: ignore[no-untyped-def]
    return int(d.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))


def test_screenshots_desktop_and_phone(admin_setup, tmp_path: Path) -> None:
    _need_browser()
    srv = admin_setup.server
    out = Path(os.environ.get("MAILSUITE_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    for label, width, height, phone in (("desktop", 1280, 900, False), ("phone", 390, 844, True)):
        d = make_driver(tmp_path / f"profile-{label}", width, height, phone)
        try:
            login(d, srv)
            for page, path in (("dashboard", "/admin/"), ("accounts", "/admin/accounts")):
                d.get(base(srv) + path)
                # Nothing wider than the screen: no sideways scrolling on a phone.
                assert int(d.execute_script("return document.documentElement.scrollWidth")) <= width + 1, (label, page)
                if phone:
                    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                        "width": width, "height": min(_full_height(d), 4000), "deviceScaleFactor": 2, "mobile": True})
                else:
                    d.set_window_size(width, min(_full_height(d) + 120, 4000))
                target = out / f"{page}-{label}.png"
                assert d.save_screenshot(str(target))
                assert target.stat().st_size > 5000
                if phone:
                    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        finally:
            d.quit()
    if not os.environ.get("MAILSUITE_SCREENSHOTS"):
        shutil.rmtree(out, ignore_errors=True)
