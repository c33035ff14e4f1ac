import pytest

from textgen.errors import TextgenError
from textgen.text.corpus import FileCorpus, open_corpus


def read(corpus) -> str:
    return "".join(corpus.chunks())


def test_files_and_folders(tmp_path):
    (tmp_path / "b.txt").write_text("second\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    corpus = open_corpus([str(tmp_path)])
    assert isinstance(corpus, FileCorpus)
    assert read(corpus) == "first\nsecond\n"  # sorted, joined with a line break


def test_other_encodings_and_windows_line_endings(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café\r\nthé\r".encode("latin-1"))
    assert read(open_corpus([str(path)], encoding="latin-1")) == "café\nthé\n"


def test_crlf_split_across_chunks(tmp_path, monkeypatch):
    import textgen.text.corpus

    monkeypatch.setattr(textgen.text.corpus, "CHUNK_CHARS", 3)
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"ab\r\ncd\r\n")
    assert read(open_corpus([str(path)])) == "ab\ncd\n"


@pytest.mark.parametrize(("name", "data", "message"), [
    ("missing.txt", None, "no such file"),
    ("empty.txt", b"", "file is empty"),
    ("bin.txt", b"\x89PNG\x00\x00\x01", "binary"),
    ("sub", "dir", "no .txt files"),
])
def test_bad_inputs(tmp_path, name, data, message):
    path = tmp_path / name
    if data == "dir":
        path.mkdir()
    elif data is not None:
        path.write_bytes(data)
    with pytest.raises(TextgenError, match=message):
        read(open_corpus([str(path)]))


def test_wrong_encoding_names_the_file_and_suggests_encoding(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("olá mundo\n".encode("latin-1"))
    with pytest.raises(TextgenError) as error:
        read(open_corpus([str(path)]))
    assert str(path) in str(error.value) and "--encoding" in str(error.value)


def test_unknown_encoding_and_empty_sources():
    with pytest.raises(TextgenError, match="unknown encoding"):
        open_corpus(["x.txt"], encoding="klingon")
    with pytest.raises(TextgenError, match="at least one"):
        open_corpus([])
    with pytest.raises(TextgenError, match="cannot be mixed"):
        open_corpus(["tfds:tiny_shakespeare", "a.txt"])
