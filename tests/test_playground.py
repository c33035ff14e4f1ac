"""The playground page in a real browser: Chromium driven by Playwright against the real server.

Chromium comes from the system (`apt-get install chromium`): Playwright's own browser download is
not needed. Without it these tests are skipped, except where TEXTGEN_REQUIRE_BROWSER is set (CI).
"""

from __future__ import annotations

import pytest

from serving import KEY, LONG, expected, wait_idle

pytestmark = pytest.mark.filterwarnings("ignore::textgen.sampling_model.UnknownPrimeWarning")


@pytest.fixture
def page(browser, server):
    """The playground, loaded, with the key typed in; requests to anywhere else are refused and noted."""
    context = browser.new_context()
    page = context.new_page()
    page.elsewhere = []

    def only_the_server(route):
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            page.elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto(server.url)
    page.fill("#key", KEY)
    page.press("#key", "Tab")  # leaving the field is what sends its change event, as for a person
    page.wait_for_function("document.querySelector('#model').options.length === 3")
    yield page
    context.close()


def settings(page, *, model="char", prompt="ROMEO:", temperature="0.8", length="300", seed="3") -> None:
    page.select_option("#model", model)
    page.fill("#prompt", prompt)
    page.fill("#temperature", temperature)
    page.fill("#max_tokens", length)
    page.fill("#seed", seed)


def test_the_page_streams_the_text_textgen_sample_gives(page, served_models):
    settings(page)
    page.press("#prompt", "Control+Enter")  # the keyboard way to generate
    page.wait_for_function("document.querySelector('#status').textContent.includes('finished (length)')")
    shown = page.text_content("#output")
    assert shown == "ROMEO:" + expected(served_models, "char", "ROMEO:", 300, temperature=0.8, seed=3)[0]
    assert "chars/s" in page.text_content("#status") and page.text_content("#error") == ""
    assert page.elsewhere == []  # no CDN, nothing from outside: it works offline


def test_text_streams_in_and_the_stop_button_stops_it(page, server):
    settings(page, length=str(LONG))
    page.click("#generate")
    page.wait_for_function("document.querySelector('#output').textContent.length > 200")
    assert page.is_enabled("#stop-button") and page.is_disabled("#generate")  # text shows while generating
    assert "chars/s" in page.text_content("#status")
    page.click("#stop-button")
    page.wait_for_function("document.querySelector('#status').textContent.includes('stopped')")
    assert page.is_enabled("#generate") and page.is_disabled("#stop-button")
    wait_idle(server, seconds=5)


def test_a_bad_setting_shows_the_servers_message(page):
    settings(page, temperature="-1")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#error').textContent.length > 0")
    assert "temperature must be at least 0" in page.text_content("#error")
    page.evaluate("loadModels()")  # the model list reloaded (a key changed) keeps that message and choice
    assert "temperature must be at least 0" in page.text_content("#error")
    assert page.input_value("#model") == "char"


def test_a_wrong_key_shows_why_and_the_right_one_clears_it(page):
    page.fill("#key", "not-the-key")
    page.press("#key", "Tab")
    page.wait_for_function("document.querySelector('#error').textContent.includes('API key')")
    page.fill("#key", KEY)
    page.press("#key", "Tab")
    page.wait_for_function("document.querySelector('#error').textContent === ''")
    assert page.locator("#model option").count() == 3
