"""Stop strings cut a streamed text at the earliest match, across piece boundaries."""

from __future__ import annotations

from mlxk2.engine.stops import StopMatcher


def stream(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool, list[str]]:
    """Feed pieces; return the emitted text, whether it stopped, and per-feed output."""
    emitted = []
    for piece in pieces:
        text, hit = matcher.feed(piece)
        emitted.append(text)
        if hit:
            return "".join(emitted), True, emitted
    emitted.append(matcher.flush())
    return "".join(emitted), matcher.stopped, emitted


def test_without_stops_text_passes_through_immediately():
    matcher = StopMatcher([])
    assert matcher.feed("hello") == ("hello", False)
    assert matcher.flush() == ""


def test_stop_string_spanning_pieces_is_trimmed_with_everything_after():
    text, hit, _ = stream(StopMatcher(["END"]), ["abc E", "N", "D tail", "more"])
    assert (text, hit) == ("abc ", True)


def test_only_a_possible_stop_prefix_is_held_back():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("one ST") == ("one ", False)
    assert matcher.feed("ay") == ("STay", False)
    assert matcher.feed("x S") == ("x ", False)
    assert matcher.flush() == "S"


def test_earliest_of_several_stops_wins():
    text, hit, _ = stream(StopMatcher(["zzz", "b"]), ["a", "b", "czzz"])
    assert (text, hit) == ("a", True)


def test_longer_stop_starting_earlier_beats_shorter_stop_completing_first():
    text, hit, _ = stream(StopMatcher(["abcd", "c"]), ["ab", "c", "d!"])
    assert (text, hit) == ("", True)


def test_shorter_stop_wins_when_longer_one_fails_to_complete():
    text, hit, _ = stream(StopMatcher(["abcd", "c"]), ["ab", "c", "x"])
    assert (text, hit) == ("ab", True)


def test_stop_completed_only_at_flush_still_cuts():
    matcher = StopMatcher(["abcd", "c"])
    assert matcher.feed("xabc") == ("x", False)
    assert matcher.flush() == "ab"
    assert matcher.stopped


def test_after_a_stop_further_text_is_dropped():
    matcher = StopMatcher(["."])
    assert matcher.feed("Hi. there") == ("Hi", True)
    assert matcher.feed("more") == ("", True)
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored():
    assert stream(StopMatcher(["", "q"]), ["abc"])[:2] == ("abc", False)


def test_multibyte_text_is_not_split_wrongly():
    text, hit, _ = stream(StopMatcher(["ünd"]), ["Grüße ü", "n", "d Tschüs"])
    assert (text, hit) == ("Grüße ", True)
