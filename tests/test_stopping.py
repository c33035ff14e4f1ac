from hypothesis import given, settings
from hypothesis import strategies as st

from textgen.generate.stopping import StopFilter


def run(chunks_per_stream, stops):
    streams = len(chunks_per_stream)
    stop_filter = StopFilter(stops, streams)
    shown = [""] * streams
    for pieces in zip(*chunks_per_stream, strict=True):
        for i, piece in enumerate(stop_filter.feed(pieces)):
            shown[i] += piece
    for i, piece in enumerate(stop_filter.flush()):
        shown[i] += piece
    return shown, stop_filter


def test_each_stream_stops_on_its_own():
    shown, stop_filter = run([["Hello wor", "ld. END more", " text"], ["No stop ", "here", " at all"]],
                             ["END", "\n\n"])
    assert shown == ["Hello world. ", "No stop here at all"]
    assert stop_filter.done == [True, False]


def test_a_stop_split_across_chunks_is_never_shown_in_part():
    stop_filter = StopFilter(["<END>"], 1)
    assert stop_filter.feed(["abc<E"]) == ["abc"]  # "<E" is held back: it may start the stop
    assert stop_filter.feed(["ND>xyz"]) == [""]
    assert stop_filter.all_done
    stop_filter = StopFilter(["<END>"], 1)
    assert stop_filter.feed(["abc<E"]) == ["abc"]
    assert stop_filter.feed(["nd"]) == ["<End"]  # not the stop after all: released
    assert stop_filter.flush() == [""]


def test_an_earlier_longer_stop_wins_over_a_later_shorter_one():
    shown, _ = run([["\na", "a"]], ["a", "\naa"])
    assert shown == [""]


@settings(max_examples=500, deadline=None)
@given(st.text("ab\n", max_size=40), st.lists(st.integers(0, 40), max_size=6),
       st.lists(st.text("ab\n", min_size=1, max_size=3), max_size=3))
def test_streaming_equals_cutting_the_whole_text(text, cuts, stops):
    edges = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *edges], [*edges, len(text)], strict=True)]
    shown, _ = run([chunks], stops)
    hits = [text.find(stop) for stop in stops if text.find(stop) >= 0]
    assert shown == [text[:min(hits)] if hits else text]
