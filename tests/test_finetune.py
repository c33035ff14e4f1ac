"""train --init-from: tiny models trained on one part of tiny shakespeare, fine-tuned on another."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY, folder_snapshot, run_cli, shakespeare


@pytest.fixture(scope="module")
def new_text(tmp_path_factory) -> tuple[Path, Path]:
    """Text B: 20,000 characters from Henry VI (its K, Q, X, Z and 3 are not in the base models'
    text A, the first 20,000 characters), and the 5,000 after them to validate on."""
    folder = tmp_path_factory.mktemp("new_text")
    text = shakespeare()
    (folder / "henry.txt").write_text(text[650_000:670_000], encoding="utf-8")
    (folder / "henry_val.txt").write_text(text[670_000:675_000], encoding="utf-8")
    return folder / "henry.txt", folder / "henry_val.txt"


def config_of(model: Path) -> dict:
    return json.loads((model / "config.json").read_text())


def nothing_written(out: Path, name: str) -> bool:
    return not (out / name).exists() and not (out / f".{name}.training").exists()


def test_fine_tuning_starts_from_the_base_and_lowers_its_loss(char_model, new_text, tmp_path, capsys):
    import textgen

    before = folder_snapshot(char_model)
    train, val = new_text
    loud = [arg for arg in TINY if arg != "--quiet"]
    code, out, err = run_cli(["train", train, *loud, "--init-from", char_model, "--val-file", val,
                              "--epochs", "1", "--dropout", "0.1", "--embedding-dropout", "0.1",
                              "--output-dir", tmp_path, "--name", "ft"],
                             capsys)
    assert code == 0, err
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("textgen: warning:")]
    assert len(err.splitlines()) == 1 and "113 of the new corpus's 20,001 tokens (0.56%)" in err
    assert "become <unk>, most often 'K' (68), 'X' (22), 'Q' (19)" in err and "--extend-vocab" in err
    init_from = config_of(tmp_path / "ft")["init_from"]
    # the weights it started from are the base's: the base measured on the same text agrees
    base_loss = textgen.load(char_model).evaluate([val])["loss"]
    assert init_from["base_val_loss"] == pytest.approx(base_loss, rel=1e-5)
    assert f"val_loss {init_from['base_val_loss']:.4f} on this run's validation text before" in out
    assert f"{init_from['base_val_loss']:.4f} before fine-tuning)." in out
    assert init_from["path"] == str(char_model.resolve()) and init_from["checkpoint"] == "best"
    assert init_from["result"] == config_of(char_model)["result"] and init_from["added_tokens"] == 0
    history = json.loads((tmp_path / "ft" / "history.json").read_text())
    assert history["val_loss"][-1] < base_loss
    config = config_of(tmp_path / "ft")
    # dropouts have no weights: the base's load into a network that drops more
    assert config["model"] == {**config_of(char_model)["model"], "dropout": 0.1, "embedding_dropout": 0.1}
    assert (tmp_path / "ft" / "tokenizer.json").read_text() == (char_model / "tokenizer.json").read_text()
    assert folder_snapshot(char_model) == before
    code, out, _ = run_cli(["info", tmp_path / "ft"], capsys)
    assert code == 0 and f"fine-tuned   from {char_model.resolve()} (best checkpoint), val_loss" in out
    assert "vocabulary reused, 0.56% of the corpus unknown" in out


@pytest.fixture(scope="module")
def untied_word_model(tmp_path_factory, corpus_file) -> Path:
    from textgen.cli import main

    out = tmp_path_factory.mktemp("models")
    assert main(["train", str(corpus_file), *TINY, "--level", "word", "--seq-len", "16", "--max-steps", "2",
                 "--no-tie-weights", "--output-dir", str(out), "--name", "untied"]) == 0
    return out / "untied"


@pytest.mark.parametrize("tied", [True, False])
def test_extended_vocabulary_keeps_the_weights_of_known_tokens(tied, word_model, untied_word_model, new_text,
                                                               tmp_path):
    """The starting model of an --extend-vocab run, before any step: old rows exactly the base's,
    whether the output layer is its own or the embedding's transpose (tied)."""
    import keras

    import textgen
    from textgen.model.network import build_model, output_weights
    from textgen.store.config import TrainConfig
    from textgen.text.corpus import open_corpus
    from textgen.text.pipeline import evaluation_dataset
    from textgen.text.tokens import measured_source
    from textgen.training.finetune import begin, plan, settings
    from textgen.training.options import InitOptions

    train, val = new_text
    base_dir = word_model if tied else untied_word_model
    base = textgen.load(base_dir)
    assert base.config.model.tie_weights is tied
    start = plan(InitOptions(model=str(base_dir), extend_vocab=True), open_corpus([str(train)]),
                 20_000, TrainConfig())
    old = base.tokenizer.vocab_size
    assert start.tokenizer.tokens[:old - 1] == base.tokenizer.tokens
    assert start.record["added_tokens"] == start.tokenizer.vocab_size - old > 600
    assert start.record["unknown_tokens"] == 0
    model = build_model(settings(start, None, TrainConfig(), start.tokenizer.vocab_size)[0])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fresh = model.get_layer("embedding").get_weights()[0][old:].copy()
    source = measured_source(start.tokenizer, open_corpus([str(val)]), "validation")
    record = begin(start, model, evaluation_dataset(source, 16, 16), tmp_path, lambda message: None)
    assert np.isfinite(record["base_val_loss"])
    for layer in base.keras_model.layers:
        for was, now in zip(layer.get_weights(), model.get_layer(layer.name).get_weights(), strict=True):
            assert np.array_equal(was, now[tuple(slice(0, n) for n in was.shape)]), layer.name
    embedding = model.get_layer("embedding").get_weights()[0]
    assert np.array_equal(embedding[old:], fresh)  # new tokens keep the model's own initialisation
    bias = keras.ops.convert_to_numpy(output_weights(model)[1])
    # new tokens, appended most frequent first, start about as likely as they are frequent
    assert np.isfinite(bias).all() and bias[old] > bias[-1]


def test_extend_vocab_stays_within_max_vocab(word_model, new_text):
    from textgen.store.config import TrainConfig
    from textgen.text.corpus import open_corpus
    from textgen.training.finetune import UnknownTokensWarning, plan
    from textgen.training.options import InitOptions

    size = config_of(word_model)["model"]["vocab_size"]
    options = InitOptions(model=str(word_model), extend_vocab=True, given={"max_vocab": size + 10})
    with pytest.warns(UnknownTokensWarning, match=f"the vocabulary is full at --max-vocab {size + 10:,}"):
        start = plan(options, open_corpus([str(new_text[0])]), size + 10, TrainConfig())
    assert start.tokenizer.vocab_size == size + 10 and start.record["added_tokens"] == 10
    assert start.tokenizer.tokens[-10:][:3] == ["KING", " Warwick", " EDWARD"]  # the most frequent first


def test_extend_vocab_run_generates_new_words(word_model, new_text, tmp_path, capsys):
    import textgen

    train, _ = new_text
    code, _, err = run_cli(["train", train, *TINY, "--seq-len", "16", "--init-from", word_model,
                            "--extend-vocab", "--epochs", "1", "--output-dir", tmp_path, "--name", "wx"],
                           capsys)
    assert code == 0 and err == ""  # the vocabulary has room for every new word: no warning
    model = textgen.load(tmp_path / "wx")
    base_size = config_of(word_model)["model"]["vocab_size"]
    assert model.config.level == "word" and model.config.model.cell == "lstm"
    assert model.config.init_from["added_tokens"] == model.tokenizer.vocab_size - base_size
    ids = model.tokenizer.encode(model.generate("", length=300, temperature=1.0, seed=1))
    assert (ids >= base_size).any()  # words only the new text has are generated


def test_python_api_fine_tunes_a_model_named_in_the_output_folder(char_model, new_text, tmp_path):
    import textgen
    from textgen.training.finetune import UnknownTokensWarning

    models = tmp_path / "models"
    shutil.copytree(char_model, models / "base")
    settings = {"output_dir": models, "seq_len": 32, "batch_size": 16, "verbose": 0}
    with pytest.warns(UnknownTokensWarning, match="become <unk>"):
        model = textgen.train(new_text[0], init_from="base", init_checkpoint="last", name="api", max_steps=3,
                              **settings)
    assert model.config.model.units == 8 and model.config.init_from["checkpoint"] == "last"
    assert model.config.init_from["path"] == str((models / "base").resolve())
    with pytest.raises(textgen.TextgenError, match="--cell lstm contradicts the base model"):
        textgen.train(new_text[0], init_from="base", cell="lstm", name="bad", **settings)
    assert nothing_written(models, "bad")


def test_resume_of_a_fine_tuning_run_starts_from_its_own_copy_of_the_base(char_model, word_model, new_text,
                                                                          tmp_path, capsys):
    """Even without a complete backup: the resumed run starts from the base's weights, not afresh,
    and from the copy it keeps, not from the base folder."""
    base = tmp_path / "base"
    shutil.copytree(char_model, base)
    # a constant rate: the default schedule is shaped by --max-steps, which the sessions differ in
    args = ["train", new_text[0], *TINY, "--epochs", "2", "--lr-schedule", "constant",
            "--output-dir", tmp_path, "--name", "ft"]
    assert run_cli([*args, "--init-from", base, "--max-steps", "40"], capsys)[0] == 0
    first = json.loads((tmp_path / "ft" / "history.json").read_text())
    recorded = config_of(tmp_path / "ft")["init_from"]
    shutil.rmtree(tmp_path / ".ft.training" / "backup")  # as if killed before its first backup
    code, _, err = run_cli([*args, "--resume", "--init-from", char_model], capsys)
    assert code == 2 and f"fine-tuned from {base.resolve()}, not {char_model.resolve()}" in err
    shutil.rmtree(base)
    shutil.copytree(word_model, base)  # the base folder holds another model now: it is not read again
    code, _, err = run_cli([*args, "--resume", "--init-from", base], capsys)
    assert code == 0, err
    history = json.loads((tmp_path / "ft" / "history.json").read_text())
    assert history["loss"][0] == pytest.approx(first["loss"][0], rel=1e-5) and len(history["loss"]) == 2
    assert config_of(tmp_path / "ft")["init_from"] == recorded
    assert not (tmp_path / ".ft.training").exists()


def test_base_trained_in_mixed_precision(corpus_file, new_text, tmp_path, capsys):
    import textgen

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = run_cli(["train", corpus_file, *TINY, "--precision", "mixed_float16",
                                "--max-steps", "3", "--output-dir", tmp_path, "--name", "mixed"], capsys)
    assert code == 0, err
    train, val = new_text
    code, _, err = run_cli(["train", train, *TINY, "--init-from", "mixed", "--val-file", val,
                            "--max-steps", "3", "--precision", "float32", "--output-dir", tmp_path,
                            "--name", "ft"], capsys)
    assert code == 0, err
    config = config_of(tmp_path / "ft")
    assert config["precision_used"] == "float32"
    # the base computes in float16, the run in float32: the same weights, within float16's precision
    base_loss = textgen.load(tmp_path / "mixed").evaluate([val])["loss"]
    assert config["init_from"]["base_val_loss"] == pytest.approx(base_loss, rel=1e-2)


def fake_exports(folder: Path) -> dict[str, Path]:
    """What `--init-from` must refuse as exports (recognised by their files, as `sample` does)."""
    (folder / "export" / "saved_model").mkdir(parents=True)
    (folder / "export" / "saved_model" / "saved_model.pb").write_bytes(b"")
    (folder / "export" / "metadata.json").write_text("{}")
    (folder / "export" / "model.tflite").write_bytes(b"TFL3")
    return {"tflite": folder / "export" / "model.tflite", "savedmodel": folder / "export" / "saved_model",
            "export": folder / "export"}


@pytest.mark.parametrize(("base", "args", "message"), [
    ("nope", [], "nope: no such model"),
    ("tflite", [], "model.tflite is an export, which cannot be trained further"),
    ("savedmodel", [], "saved_model is an export"),
    ("export", [], "export is an export"),
    ("char", ["--cell", "lstm"], "--cell lstm contradicts the base model"),
    ("char", ["--units", "16", "--embedding-dim", "4"], "--units 16, --embedding-dim 4 contradict the base"),
    ("char", ["--level", "word"], "--level word contradicts the base model"),
    ("char", ["--max-vocab", "100"], "--max-vocab applies to fine-tuning only with --extend-vocab"),
    ("char", ["--extend-vocab", "--max-vocab", "10"], "--max-vocab 10 is smaller than the base model's"),
    (None, ["--extend-vocab"], "--extend-vocab and --init-checkpoint go with --init-from MODEL"),
    ("char", ["--optimizer", "sgd"], "--optimizer sgd needs --lr: the base model's rate is for adamw"),
    ("char", ["--optimizer", "sgd", "--lr", "1", "--weight-decay", "0.1"], "--weight-decay is AdamW's"),
    ("char", ["--greek"], "the base model's vocabulary has none of the new corpus's chars but spaces"),
])
def test_fine_tuning_mistakes(base, args, message, char_model, new_text, tmp_path, capsys):
    exports = fake_exports(tmp_path)
    source = new_text[0]
    if "--greek" in args:
        args = [a for a in args if a != "--greek"]
        source = tmp_path / "greek.txt"
        source.write_text("Ωκεανός και ποταμός\n" * 300, encoding="utf-8")  # no letter of text A
    init = [] if base is None else ["--init-from", exports.get(base, char_model if base == "char" else base)]
    code, _, err = run_cli(["train", source, *TINY, *init, *args, "--output-dir", tmp_path / "out",
                              "--name", "ft"], capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("textgen: error: ")
    assert not (tmp_path / "out").exists()


def test_fine_tuning_keeps_the_base_optimizer_unless_told(corpus_file, tmp_path, capsys):
    """A fine-tuning run trains as its base did (optimizer, rate, clipping); switching from an SGD
    base to AdamW needs a rate, since the base's (20 here) is on SGD's scale."""
    def train(*args) -> tuple[int, str]:
        code, _, err = run_cli(["train", corpus_file, *TINY, "--max-steps", "2", *args], capsys)
        assert code in (0, 2) and "Traceback" not in err
        return code, err

    def optimizer(model: Path) -> tuple:
        config = json.loads((model / "config.json").read_text())["train"]
        return config["optimizer"], config["lr"], config["clipnorm"], config["weight_decay"]

    base, out = tmp_path / "sgd", tmp_path / "out"
    assert train("--optimizer", "sgd", "--lr", "20", "--clipnorm", "0.5", "--output-dir", tmp_path, "--name",
                 "sgd")[0] == 0
    assert train("--init-from", base, "--output-dir", tmp_path, "--name", "same")[0] == 0
    assert optimizer(tmp_path / "same") == ("sgd", 20, 0.5, 0)
    code, err = train("--init-from", base, "--optimizer", "adamw", "--output-dir", out, "--name", "ft")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("textgen: error: --optimizer adamw needs --lr: the base model's rate is for sgd")
    assert not out.exists()
    assert train("--init-from", base, "--optimizer", "adamw", "--lr", "1e-3", "--output-dir", out, "--name",
                 "ft")[0] == 0
    assert optimizer(out / "ft") == ("adamw", 1e-3, 1, 0.1)  # AdamW's defaults, not the base's clipping
