"""Records as sources (lines, paragraphs, separators, CSV, TSV, JSON Lines), the control tokens that
mark where each starts and ends and what label it has, and generating whole records per label:
through the API, the CLI, the exports, the server and the browser."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

import textgen
from textgen.cli import interactive, main
from textgen.errors import TextgenError
from textgen.text.corpus import open_corpus
from textgen.text.records import RecordFormat
from textgen.text.tokenizers import BOS, EOS, CharTokenizer, WordTokenizer, label_token

from helpers import folder_snapshot, run_cli, static_site
from serving import Server

SHAPES = {"digits": ("0123456789", "[0-9]+"), "vowels": ("aeiou", "[aeiou]+"), "caps": ("XYZ", "[XYZ]+")}
SHAPE_MODEL = ["--label-column", "kind", "--layers", "1", "--units", "64", "--seq-len", "64",
               "--batch-size", "32", "--max-steps", "300", "--no-samples", "--quiet"]


def write_shapes(path: Path, count: int, seed: int = 0) -> Path:
    """Records of three kinds, each of its own alphabet and 4 to 10 characters long, in a CSV file
    with a label column."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "kind"])
        for _ in range(count):
            kind = rng.choice(sorted(SHAPES))
            writer.writerow(["".join(rng.choice(SHAPES[kind][0]) for _ in range(rng.randint(4, 10))), kind])
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    """A model trained by the CLI on 600 labelled shapes (12 s on 2 cores), exported in every format."""
    root = tmp_path_factory.mktemp("shapes")
    data = write_shapes(root / "shapes.csv", 600)
    held = write_shapes(root / "held.csv", 60, seed=1)
    code = main(["train", str(data), *SHAPE_MODEL, "--output-dir", str(root / "models"),
                             "--name", "shapes"])
    assert code == 0
    model = root / "models" / "shapes"
    assert main(["export", str(model)]) == 0
    return {"data": data, "held": held, "model": model, "root": root}


def records(path: Path, **fmt) -> list[tuple[str, str | None]]:
    corpus = open_corpus([str(path)], records=RecordFormat(**fmt) if fmt else None)
    return [(record.text, record.label) for record in corpus.records()]


# -- reading records -------------------------------------------------------------------------------
def test_csv_records_keep_quoted_fields_line_breaks_and_labels(tmp_path):
    path = tmp_path / "recipes.csv"
    path.write_bytes('\ufefftitle,steps,category\n"Pie","Mix, then bake.\nServe ""warm""",dessert\n'
                     'Soup,Boil.,\n\nBread,"Knead\r\nand rest",baking\n'.encode())
    assert records(path, text_column="steps", label_column="category") == [
        ('Mix, then bake.\nServe "warm"', "dessert"), ("Boil.", None), ("Knead\r\nand rest", "baking")]
    with pytest.raises(TextgenError, match=r"which column holds the text\? give --text-column \(it has "
                                           r"'title', 'steps', 'category'\)"):
        records(path, label_column="category")
    tsv = tmp_path / "names.tsv"
    tsv.write_text("name\tkind\nAda Lovelace\tperson\nEnigma, machine\tthing\n", encoding="utf-8")
    assert records(tsv, label_column="kind") == [("Ada Lovelace", "person"), ("Enigma, machine", "thing")]


def test_json_lines_records_read_the_text_and_label_keys(tmp_path):
    path = tmp_path / "quotes.jsonl"
    lines = [{"quote": "Be brief.", "who": "Polonius", "year": 1600}, {"quote": "Ünïcödé 😀\nline two"},
             {"quote": "Numbers as labels", "who": 7}]
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    path.write_text(text + "\n\n", encoding="utf-8")
    assert records(path, text_key="quote", label_key="who") == [
        ("Be brief.", "Polonius"), ("Ünïcödé 😀\nline two", None), ("Numbers as labels", "7")]


def test_text_files_split_into_lines_paragraphs_or_between_separators(tmp_path):
    path = tmp_path / "fortunes"
    path.write_text("A fortune\non two lines.\n%\nAnother.\n%\n%\n\nA third, after a blank line.\n%\n",
                    encoding="utf-8")
    assert records(path, documents="separator:%") == [
        ("A fortune\non two lines.", None), ("Another.", None), ("A third, after a blank line.", None)]
    assert records(path, documents="lines")[:2] == [("A fortune", None), ("on two lines.", None)]
    poems = tmp_path / "poems.txt"
    poems.write_text("\n\nRoses are red,\nviolets blue.\n\n\n  \nShort.\n", encoding="utf-8")
    assert records(poems, documents="blank-lines") == [("Roses are red,\nviolets blue.", None),
                                                       ("Short.", None)]


@pytest.mark.parametrize("tokenizer_type", [CharTokenizer, WordTokenizer])
def test_control_tokens_are_never_cut_from_text_and_never_shown(tokenizer_type):
    text = "a <bos> b<eos> <label:x> é"
    tokenizer, _ = tokenizer_type.fit([text])
    tokenizer = tokenizer.with_records(["x", "y z"])
    specials = tokenizer.specials
    assert [tokenizer.tokens[i - 1] for i in (specials.bos, specials.eos)] == [BOS, EOS]
    assert specials.labels == {"x": tokenizer.vocab_size - 2, "y z": tokenizer.vocab_size - 1}
    ids = tokenizer.encode(text)
    assert not set(ids.tolist()) & {specials.bos, specials.eos, *specials.labels.values()}
    assert tokenizer.decode(ids) == text
    wrapped = np.concatenate([[specials.bos, specials.labels["x"]], ids, [specials.eos]])
    assert tokenizer.decode(wrapped) == text
    again = tokenizer_type(tokenizer.tokens)  # as it is read back from vocab.json
    assert again.specials == specials and again.with_records(["x"]).tokens == tokenizer.tokens
    with pytest.raises(TextgenError, match="unknown label 'w'; the model knows 'x', 'y z'"):
        specials.label_id("w")
    assert label_token("y z") == "<label:y z>"


# -- training, sampling, evaluating ----------------------------------------------------------------
def test_a_labelled_model_writes_records_of_the_label_asked_for_and_ends_them(shapes, capsys):
    model = textgen.load(shapes["model"])
    for kind, (_, pattern) in SHAPES.items():
        texts = model.generate_many(length=40, num_samples=20, seed=1, label=kind, temperature=0.8)
        shaped = [text for text in texts if re.fullmatch(pattern, text) and 4 <= len(text) <= 12]
        assert len(shaped) >= 18, (kind, texts)
    code, out, _ = run_cli(["info", shapes["model"]], capsys)
    assert code == 0 and "600 records from" in out
    assert re.search(r"labels\s+3: \w+ \(\d+\), \w+ \(\d+\), \w+ \(\d+\)", out)


def test_sample_streams_whole_records_separated_by_blank_lines_or_as_json_lines(shapes, capsys):
    sample = ["sample", shapes["model"], "--seed", "2"]
    code, out, _ = run_cli([*sample, "--label", "caps", "--num-samples", "5"], capsys)
    assert code == 0
    texts = out.rstrip("\n").split("\n\n")
    assert len(texts) == 5 and all(re.fullmatch("[XYZ]+", text) for text in texts), out
    model = textgen.load(shapes["model"])
    assert texts == model.generate_many(length=500, num_samples=5, seed=2, label="caps")
    code, out, _ = run_cli([*sample, "--label", "digits", "--num-samples", "4", "--jsonl"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 4 and all(row["label"] == "digits" for row in rows)
    expected = model.generate_many(length=500, num_samples=4, seed=2, label="digits")
    assert [row["text"] for row in rows] == expected
    code, out, _ = run_cli(["sample", shapes["model"], "--prime", "XY", "--no-stop-at-end", "--length", "80",
                            "--seed", "3"], capsys)
    assert code == 0 and out.startswith("XY") and out.count("\n\n") >= 3  # on into further records


def test_evaluate_reports_the_loss_per_record_and_bits_per_char_of_the_text(shapes, capsys):
    model = textgen.load(shapes["model"])
    result = model.evaluate([shapes["held"]], seq_len=32)
    held = list(csv.reader(shapes["held"].open()))[1:]
    assert result["chars"] < result["tokens"]  # <bos>, labels and <eos> stand for no characters
    assert 0 < result["records"] <= len(held)
    assert result["loss_per_record"] == pytest.approx(result["loss"] * result["tokens"] / result["records"])
    assert result["bits_per_char"] < result["loss"] / np.log(2) * result["tokens"] / result["chars"]
    code, out, _ = run_cli(["evaluate", shapes["model"], shapes["held"], "--seq-len", "32",
                            "--novelty", shapes["data"], "--samples", "40"], capsys)
    assert code == 0 and "per record" in out
    share = re.search(r"verbatim records +(\d+) of 40 \((\d+)%\)", out)
    report = model.novelty([shapes["data"]], num_samples=40, length=500)
    assert share and int(share.group(1)) == report["verbatim_records"]
    texts = model.generate_many(length=500, num_samples=40, seed=0)  # the samples novelty measured
    training = {row[0] for row in csv.reader(shapes["data"].open())}
    assert report["verbatim_records"] == sum(text in training for text in texts)
    copies = shapes["root"] / "copies.csv"  # a corpus holding ten of them (and one that is not)
    with copies.open("w", newline="") as handle:
        rows = [("text", "kind"), *((text, "caps") for text in texts[:10]), ("Q", "caps")]
        csv.writer(handle).writerows(rows)
    report = model.novelty([copies], num_samples=40, length=500)
    assert report["verbatim_records"] == sum(text in set(texts[:10]) for text in texts) >= 10


# -- exports, the server and the browser -----------------------------------------------------------
def test_exports_take_the_label_and_end_records_as_the_model_does(shapes):
    model = textgen.load(shapes["model"])
    export = shapes["model"] / "export"
    metadata = json.loads((export / "metadata.json").read_text())
    specials = model.tokenizer.specials
    assert metadata["document"] == {"bos_id": specials.bos, "eos_id": specials.eos,
                                    "label_ids": specials.labels}
    assert metadata["parity"]["tflite"]["greedy_text_identical"]
    for file in ("model.tflite", "saved_model"):
        exported = textgen.load(export / file)
        for label in (None, "vowels", "caps"):
            options = {"length": 40, "num_samples": 4, "seed": 5, "label": label}
            assert exported.generate_many(**options) == model.generate_many(**options), (file, label)
        with pytest.raises(TextgenError, match="unknown label 'nope'"):
            exported.generate(label="nope")

    import tensorflow as tf

    serving = tf.saved_model.load(str(export / "saved_model")).signatures["serving_default"]
    args = {"prompts": tf.constant(["", "", "XY"]), "num_tokens": tf.constant(40),
            "temperature": tf.constant(0.5), "top_k": tf.constant(0), "top_p": tf.constant(1.0),
            "seed": tf.constant(1)}
    out = serving(labels=tf.constant(["digits", "", "caps"]), **args)
    texts = [text.decode() for text in out["text"].numpy()]
    assert re.fullmatch("[0-9]+", texts[0]) and re.fullmatch("XY[XYZ]+", texts[2]), texts
    assert all("<" not in text for text in texts)
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown label"):
        serving(labels=tf.constant(["nope", "", ""]), **args)


@pytest.fixture(scope="module")
def shapes_server(shapes):
    """`textgen serve` of the shapes model and its TFLite export, without a key."""
    tflite = shapes["model"] / "export" / "model.tflite"
    server = Server([shapes["model"], tflite], shapes["root"] / "server.log")
    yield server
    assert server.stop() == 0


def test_the_server_takes_a_label_and_ends_each_choice_with_its_record(shapes, shapes_server):
    server, model = shapes_server, textgen.load(shapes["model"])
    for name in ("shapes", "shapes-tflite"):
        body = {"model": name, "prompt": "", "label": "vowels", "n": 3, "max_tokens": 60, "seed": 4,
                "temperature": 0.8}
        reply = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
        texts = [choice["text"] for choice in reply["choices"]]
        assert texts == model.generate_many(length=60, num_samples=3, seed=4, label="vowels")
        assert all(choice["finish_reason"] == "stop" for choice in reply["choices"])
        assert reply["usage"]["completion_tokens"] == sum(len(text) + 1 for text in texts)  # and <eos>
    for label, message in (("nope", "unknown label 'nope'"), (3, "label must be a string")):
        reply = httpx.post(f"{server.url}/v1/completions", json={"model": "shapes", "prompt": "",
                                                                  "label": label}, timeout=10)
        assert reply.status_code == 400 and message in reply.json()["error"]["message"]
        assert reply.json()["error"]["param"] == "label"
    listed = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]
    assert [entry["labels"] for entry in listed] == [list(model.tokenizer.specials.labels)] * 2


def test_the_playground_offers_the_labels_and_writes_that_labels_record(shapes, shapes_server, browser):
    model = textgen.load(shapes["model"])
    page = browser.new_page()
    page.goto(shapes_server.url)
    page.wait_for_function("!document.querySelector('#label-field').hidden")
    assert page.eval_on_selector_all("#label option", "options => options.map(o => o.value)") == [
        "", *model.tokenizer.specials.labels]
    page.select_option("#label", "vowels")
    for field, value in (("#prompt", ""), ("#max_tokens", "60"), ("#seed", "4"), ("#temperature", "0.8")):
        page.fill(field, value)
    page.click("#generate")
    page.wait_for_function("document.querySelector('#status').textContent.includes('finished (stop)')")
    assert page.text_content("#output") == model.generate(length=60, seed=4, label="vowels")
    assert page.text_content("#error") == ""
    page.close()


def test_the_browser_writes_the_records_textgen_sample_writes(shapes, browser):
    model = textgen.load(shapes["model"])
    with static_site({"shapes": shapes["model"] / "export" / "web"}) as url:
        page = browser.new_page()
        page.goto(f"{url}/shapes/")
        page.wait_for_function("window.textgenModel !== undefined || document.querySelector('#error')"
                               ".textContent", timeout=60_000)
        assert page.eval_on_selector_all("#label option", "options => options.map(o => o.value)") == [
            "", *model.tokenizer.specials.labels]
        for label, prompt, stop_at_end in (("caps", "", True), (None, "", True), ("digits", "1", False)):
            options = {"prompt": prompt, "length": 60, "seed": 7, "label": label, "stopAtEnd": stop_at_end}
            js = page.evaluate("(options) => window.textgenModel.generate(options)", options)
            expected = model.generate(prompt, 60, seed=7, label=label, stop_at_end=stop_at_end)[len(prompt):]
            assert js == expected, (label, js, expected)
        error = page.evaluate("() => window.textgenModel.generate({label: 'nope'}).catch((e) => e.message)")
        assert error.startswith("unknown label 'nope'; the model knows")
        page.close()


# -- fine-tuning -------------------------------------------------------------------------------------
def test_a_model_of_one_text_fine_tunes_onto_records_with_extend_vocab(shapes, char_model, tmp_path, capsys):
    out = tmp_path / "models"
    args = ["train", shapes["data"], "--label-column", "kind", "--init-from", char_model, "--output-dir", out,
            "--name", "tuned", "--max-steps", "5", "--no-samples", "--quiet"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and not (out / "tuned").exists()
    assert "vocabulary lacks <bos>, <eos>, <label:" in err
    assert err.strip().endswith("--extend-vocab adds them")
    code, _, err = run_cli([*args, "--extend-vocab"], capsys)
    assert code == 0, err
    tuned = textgen.load(out / "tuned")
    base = textgen.load(char_model)
    assert tuned.tokenizer.tokens[:base.tokenizer.vocab_size - 1] == base.tokenizer.tokens
    assert set(tuned.tokenizer.specials.labels) == set(SHAPES)
    more = write_shapes(tmp_path / "more.csv", 50, seed=3)
    more.write_text(more.read_text().replace(",caps", ",capitals"), encoding="utf-8")
    code, _, err = run_cli(["train", more, "--label-column", "kind", "--init-from", out / "tuned",
                            "--output-dir", out, "--name", "more", "--max-steps", "2", "--no-samples",
                            "--quiet"], capsys)
    assert code == 2 and "lacks <label:capitals>" in err and not (out / "more").exists()


# -- mistakes --------------------------------------------------------------------------------------
SKIPS = " (--skip-bad-records skips such rows)"
BAD_INPUTS = [  # (file name, content, extra options, the error's end)
    ("a.csv", "text,kind\nabc,x\n", ["--text-column", "body"], "a.csv: no column 'body'; it has 'text', "
                                                                "'kind'"),
    ("a.csv", "text,kind\nabc,x\n", ["--label-column", "type"], "no column 'type'; it has 'text', 'kind'"),
    ("a.csv", "title,body\nabc,x\n", [], "which column holds the text? give --text-column (it has 'title', "
                                         "'body')"),
    ("a.csv", 'text,kind\nabc,x\n"unclosed,y\n', ["--label-column", "kind"],
     "a.csv:3: malformed CSV (unexpected end of data)" + SKIPS),
    ("a.csv", "text,kind\nabc,x,extra\n", ["--text-column", "text"],
     "a.csv:2: 3 fields where the header has 2" + SKIPS),
    ("a.csv", "text,kind\n,x\n", ["--label-column", "kind"],
     "a.csv:2: empty record (column 'text' is empty)" + SKIPS),
    ("a.csv", "", [], "a.csv: file is empty (a CSV file starts with a header row)"),
    ("a.jsonl", '{"text": "abc"}\n{"text": "abc"\n', [],
     "a.jsonl:2: not valid JSON (Expecting ',' delimiter)" + SKIPS),
    ("a.jsonl", '{"text": "abc"}\n["abc"]\n', [], "a.jsonl:2: not a JSON object" + SKIPS),
    ("a.jsonl", '{"text": "abc"}\n{"text": 5}\n', [], "a.jsonl:2: 'text' holds int, not text" + SKIPS),
    ("a.jsonl", '{"a": "x", "b": "y"}\n', [], "which key holds the text? give --text-key (it has 'a', 'b')"),
    ("a.txt", "abc\n", ["--text-column", "x"],
     "--text-column, --label-column, --text-key and --label-key are for .csv, .tsv and .jsonl files"),
    ("a.txt", "abc\n", ["--documents", "pages"],
     "unknown --documents 'pages'; choose none, lines, blank-lines or separator:TEXT"),
    ("a.txt", "\n\n  \n", ["--documents", "lines"], "the corpus holds no text"),
    ("a.csv", "text\n\xff\n", [], "not valid utf-8"),
]


@pytest.mark.parametrize(("name", "content", "extra", "error"), BAD_INPUTS)
def test_each_bad_record_input_is_one_error_and_nothing_is_written(tmp_path, capsys, name, content, extra,
                                                                    error):
    path = tmp_path / "data" / name
    path.parent.mkdir()
    path.write_bytes(content.encode("latin-1") if "\xff" in content else content.encode())
    out = tmp_path / "models"
    code, _, err = run_cli(["train", path, *extra, "--output-dir", out, "--name", "m", "--layers", "1",
                            "--units", "8", "--max-steps", "2", "--no-samples", "--quiet"], capsys)
    assert code == 2 and err.startswith("textgen: error: ") and err.count("\n") == 1, err
    assert error in err and "Traceback" not in err
    assert not (out / "m").exists() and folder_snapshot(path.parent) == {Path(name): path.read_bytes()}


def test_bad_rows_can_be_skipped_and_are_counted(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    rows = "".join(f"{'xyz' * (i % 5 + 1)},{'ab'[i % 2]}\n" for i in range(200))
    path.write_text(f"text,kind\n{rows}only-one-field\n,a\n", encoding="utf-8")
    out = tmp_path / "models"
    code, _, err = run_cli(["train", path, "--label-column", "kind", "--skip-bad-records", "--output-dir",
                            out, "--name", "rows", "--layers", "1", "--units", "8", "--seq-len", "16",
                            "--max-steps", "2", "--no-samples", "--quiet"], capsys)
    assert code == 0, err
    corpus = textgen.load(out / "rows").config.corpus
    assert corpus["records"] == 200 and corpus["skipped_records"] == 2
    assert corpus["labels"] == {"a": 100, "b": 100}
    code, out_text, _ = run_cli(["info", out / "rows"], capsys)
    assert "2 unreadable rows skipped" in out_text


def test_sampling_mistakes_are_one_line_each(shapes, char_model, capsys):
    mistakes = ((shapes["model"], "nope", "unknown label 'nope'; the model knows "),
                (char_model, "x", "this model was trained on one text, not on records"))
    for model, label, error in mistakes:
        code, out, err = run_cli(["sample", model, "--label", label], capsys)
        assert code == 2 and out == "" and err.startswith(f"textgen: error: {error}")
        assert err.count("\n") == 1
    answers: list[str] = []
    lines = iter([":label nope", "X", ":label caps", "", ":end off", None])
    interactive.run(textgen.load(shapes["model"]), interactive.Settings(length=20, seed=1), lines.__next__,
                    answers.append)
    said = "".join(answers)
    assert "error: unknown label 'nope'" in said and "label 'caps'" in said and "stop-at-end off" in said
