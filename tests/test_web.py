"""`textgen export --format web` in a real browser: Chromium, driven by Playwright, loads the export
folder from a static file server on 127.0.0.1 and runs the model with LiteRT.js; its text must be
the text `textgen sample` gives, byte for byte.

Chromium comes from the system (`apt-get install chromium`); without it these tests are skipped,
except where TEXTGEN_REQUIRE_BROWSER is set (CI).
"""

from __future__ import annotations

import json

import httpx
import pytest

import textgen
from textgen.text.tokenizers import CharTokenizer, WordTokenizer

from helpers import shakespeare, static_site
from serving import Server

pytestmark = pytest.mark.filterwarnings("ignore::textgen.sampling_model.UnknownPrimeWarning")
MULTILINGUAL = ("Ça va? Ünïcödé naïve café — “quotes” and ‘apostrophes’ can’t stop it.\n"
                "日本語のテキスト、中文字符，한국어 문장. Ελληνικά, русский текст, עברית, العربية.\n"
                "Emoji 😀👍🏽 and flags 🇫🇷; tabs\tand  double  spaces\u00a0nbsp, x²+y² ≤ ½,\n"
                "e\u0301 combining.\n")


@pytest.fixture(scope="module")
def web_models(exported, exported_word) -> dict:
    """An LSTM, a GRU and a SimpleRNN char model and an LSTM word model, exported in every format:
    (model folder, its web folder), the web file's parity measured before it was written."""
    models = {**exported, "word": exported_word}
    for path in models.values():
        parity = json.loads((path / "export" / "metadata.json").read_text())["parity"]["web"]
        assert parity["max_abs_logit_diff"] < 1e-4 and parity["greedy_text_identical"], parity
    return {name: (path, path / "export" / "web") for name, path in models.items()}


@pytest.fixture(scope="module")
def site(web_models):
    """Every web folder under /NAME/ on a static file server."""
    with static_site({name: web for name, (_, web) in web_models.items()}) as url:
        yield url


@pytest.fixture(scope="module")
def pages(browser, site, web_models):
    """Each model's page, loaded once: `window.textgenModel` is the loaded model."""
    context = browser.new_context()
    loaded = {}
    for name in web_models:
        page = context.new_page()
        page.goto(f"{site}/{name}/")
        page.wait_for_function("window.textgenModel !== undefined"
                               " || document.querySelector('#error').textContent", timeout=60_000)
        assert page.text_content("#error") == ""
        loaded[name] = page
    yield loaded
    context.close()


SETTINGS = [  # (model, prompt, settings): greedy and seeded, every cell, a word model with CJK and emoji
    ("gru", "ROMEO:", {"temperature": 0}),
    ("gru", "ROMEO:", {"temperature": 0.8, "seed": 3}),
    ("lstm", "KING", {"temperature": 0}),
    ("lstm", "", {"temperature": 1.1, "seed": 5, "topK": 8, "topP": 0.9}),
    ("rnn", "First", {"temperature": 0}),
    ("rnn", "First", {"temperature": 0.7, "seed": 11, "repetitionPenalty": 1.3}),
    ("word", "ROMEO 你好 😀", {"temperature": 0}),
    ("word", "KING 你好", {"temperature": 0.9, "seed": 2, "topK": 20}),
]


@pytest.mark.parametrize(("name", "prompt", "settings"), SETTINGS)
def test_the_browser_writes_the_text_textgen_sample_writes(pages, web_models, name, prompt, settings):
    js = pages[name].evaluate("(options) => window.textgenModel.generate(options)",
                              {"prompt": prompt, "length": 300, **settings})
    python = {"temperature": settings["temperature"], "top_k": settings.get("topK", 0),
              "top_p": settings.get("topP", 1.0), "seed": settings.get("seed", 0),
              "repetition_penalty": settings.get("repetitionPenalty", 1.0)}
    expected = textgen.load(web_models[name][0]).generate(prompt, 300, **python)[len(prompt):]
    assert js == expected


def test_the_javascript_tokenizers_cut_text_as_python_does(pages, web_models):
    corpus = shakespeare()[:300_000] + MULTILINGUAL
    char = textgen.load(web_models["gru"][0]).tokenizer
    assert isinstance(char, CharTokenizer)
    js_ids = pages["gru"].evaluate("(text) => window.textgenModel.encode(text)", corpus)
    assert js_ids == char.encode(corpus).tolist()
    word = textgen.load(web_models["word"][0]).tokenizer
    assert isinstance(word, WordTokenizer)
    js_pieces = pages["word"].evaluate("(text) => window.textgenModel.pieces(text)", corpus)
    assert js_pieces == word.split(corpus) and "".join(js_pieces) == corpus
    js_ids = pages["word"].evaluate("(text) => window.textgenModel.encode(text)", corpus)
    assert js_ids == word.encode(corpus).tolist()


def test_the_page_streams_text_and_stops(browser, site):
    page = browser.new_page()
    page.goto(f"{site}/gru/")
    page.wait_for_function("window.textgenModel !== undefined")
    page.fill("#length", "100000")
    page.fill("#seed", "4")
    page.press("#prompt", "Control+Enter")
    page.wait_for_function("document.querySelector('#output').textContent.length > 300")
    assert page.is_disabled("#generate") and "chars/s" in page.text_content("#status")  # text while it runs
    page.click("#stop-button")
    page.wait_for_function("document.querySelector('#status').textContent.includes('stopped')")
    assert page.is_enabled("#generate")
    page.close()


def test_once_loaded_the_page_works_offline(browser, site, web_models):
    context = browser.new_context()
    page = context.new_page()
    outside = []
    page.on("request", lambda request: None if request.url.startswith(site) else outside.append(request.url))
    page.goto(f"{site}/rnn/")
    page.wait_for_function("window.textgenModel !== undefined")
    context.set_offline(True)
    text = page.evaluate("() => window.textgenModel.generate({prompt: 'ROMEO:', length: 50, temperature: 0})")
    assert text == textgen.load(web_models["rnn"][0]).generate("ROMEO:", 50, temperature=0)[len("ROMEO:"):]
    assert outside == []  # no CDN: everything came from the export folder
    context.close()


def test_the_web_folder_holds_the_runtime_and_a_batch_one_model(web_models):
    _, web = web_models["gru"]
    names = {p.name for p in web.iterdir()}
    assert names == {"index.html", "textgen.js", "model.tflite", "metadata.json", "litert"}
    vendor = json.loads((web / "litert" / "VENDOR.json").read_text())
    assert vendor["package"] == "@litertjs/core" and (web / "litert" / "LICENSE").is_file()
    metadata = json.loads((web / "metadata.json").read_text())
    assert metadata["inputs"]["token_ids"]["shape"] == [1] and metadata["web"]["batch"] == 1
    assert metadata["tflite"] == {"file": "model.tflite", "signature": "step", "quantization": "none"}
    assert textgen.load(web / "model.tflite").generate("A", 20, seed=1) == textgen.load(
        web_models["gru"][0]).generate("A", 20, seed=1)  # the same file, run by LiteRT in Python


def test_textgen_serve_serves_a_models_web_export(web_models, browser, tmp_path):
    model = web_models["rnn"][0]  # its web export is in the model folder's export/
    server = Server([model, "--max-batch", "2"], tmp_path / "log")
    try:
        listed = httpx.get(f"{server.url}/v1/models").json()["data"]
        assert listed[0]["web"] == "/web/rnn/"
        page = browser.new_page()
        page.goto(f"{server.url}/web/rnn/")
        page.wait_for_function("window.textgenModel !== undefined")
        text = page.evaluate("() => window.textgenModel.generate({prompt: 'A', length: 40, temperature: 0})")
        assert text == textgen.load(model).generate("A", 40, temperature=0)[1:]
        page.close()
    finally:
        server.stop()


def test_an_int8_web_model_writes_what_its_file_writes_in_python(web_models, browser, tmp_path):
    from textgen.cli import main

    assert main(["export", str(web_models["gru"][0]), "--format", "web", "--quantize", "dynamic",
                 "--output", str(tmp_path / "int8")]) == 0
    web = tmp_path / "int8" / "web"
    assert json.loads((web / "metadata.json").read_text())["tflite"]["quantization"] == "dynamic"
    python = textgen.load(web / "model.tflite").generate("ROMEO:", 300, temperature=0.8, seed=3)
    with static_site({"int8": web}) as url:
        page = browser.new_page()
        page.goto(f"{url}/int8/")
        page.wait_for_function("window.textgenModel !== undefined")
        js = page.evaluate("(options) => window.textgenModel.generate(options)",
                           {"prompt": "ROMEO:", "length": 300, "temperature": 0.8, "seed": 3})
        page.close()
    assert js == python[len("ROMEO:"):]  # one file: LiteRT.js in the browser, LiteRT in Python
