"""The web page in a real headless browser (Debian's chromium + chromedriver, driven by selenium):
upload an image, type a sentence, submit, read the labels shown, save a screenshot."""

import os
import shutil
from pathlib import Path

import pytest

from mitp import Classifier
from mitp.app.serve import create_app, running

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

if not (CHROMIUM and CHROMEDRIVER):
    # CI installs them (.ci/run) and sets MITP_REQUIRE_BROWSER=1: there a missing browser is a failure.
    if os.environ.get("MITP_REQUIRE_BROWSER") == "1":
        raise RuntimeError("chromium and chromedriver are required: apt-get install chromium chromium-driver")
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_submit_and_read_the_labels(browser, tiny_run, toy_dataset, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    classifier = Classifier.from_pretrained(tiny_run)
    image = toy_dataset / "images" / "test-0004.png"
    expected = classifier.predict([image], ["apple amber"], top_k=3)[0]
    with running(create_app(classifier)) as url:
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda d: "mitp on tiny-clip" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "image").send_keys(str(image))
        browser.find_element(By.ID, "text").send_keys("apple amber")
        top_k = browser.find_element(By.ID, "top_k")
        top_k.clear()
        top_k.send_keys("3")
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 30).until(
            expected_conditions.presence_of_all_elements_located((By.CSS_SELECTOR, "#results .prediction"))
        )
        shown = [
            row.find_element(By.CLASS_NAME, "name").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#results .prediction")
        ]
        assert shown == [p["label"] for p in expected]
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "explain").is_displayed())
        screenshot = Path(os.environ.get("MITP_SCREENSHOT", tmp_path / "page.png"))  # the README's is made so
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_a_server_error_without_json_is_shown_by_status_not_swallowed(browser, tiny_run, toy_dataset, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    classifier = Classifier.from_pretrained(tiny_run)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the model")

    monkeypatch.setattr(classifier, "to_predictions", broken)
    with running(create_app(classifier)) as url:
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda d: "mitp on tiny-clip" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "image").send_keys(str(toy_dataset / "images" / "test-0004.png"))
        browser.find_element(By.ID, "text").send_keys("apple amber")
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text)
        assert browser.find_element(By.ID, "error").text.startswith("500 Internal Server Error")
        assert not browser.find_elements(By.CSS_SELECTOR, "#results .prediction")
