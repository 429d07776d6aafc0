"""The constrained CTC decoding of a printed serial (lineguard.ocr.ctc) on recogniser outputs made by hand:
a confusable character corrected, an impossible reading refused, never a wrong serial given out."""

import numpy as np

from lineguard.ocr import checksums, ctc

CHARSET = ["blank", *"LGO0123456789-"]
SERIAL = r"LG-\d{7}-\d"
CHECK = checksums.get("digits-mod10")


def _probs(steps: list[dict[str, float]]) -> np.ndarray:
    """One step per character (the rest of its mass on the blank), a blank step between characters."""
    rows = []
    for step in steps:
        row = np.full(len(CHARSET), 1e-6)
        for char, p in step.items():
            row[CHARSET.index(char)] = p
        row[0] = max(1e-6, 1 - sum(step.values()))
        rows += [row / row.sum(), np.eye(len(CHARSET))[0] * 0.999 + 0.001 / len(CHARSET)]
    return np.array(rows)


def _sure(text: str) -> list[dict[str, float]]:
    return [{c: 0.98} for c in text]


def test_plain_reading_collapses_blanks_and_repeats() -> None:
    probs = _probs(_sure("LG-1233456-1"))
    assert ctc.best_path(probs, CHARSET).text == "LG-1233456-1"


def test_a_confusable_G_read_as_0_is_corrected() -> None:
    steps = _sure("LG-1234567-0")
    steps[1] = {"0": 0.6, "G": 0.35}
    probs = _probs(steps)
    assert ctc.best_path(probs, CHARSET).text == "L0-1234567-0"
    found = ctc.constrained(probs, CHARSET, SERIAL, CHECK)
    assert found is not None and found.text == "LG-1234567-0"
    assert CHECK(found.text)
    assert 0 < found.confidence < 1


def test_a_reading_no_candidate_of_which_passes_the_checksum_is_refused() -> None:
    # LG-1234567-1: the check digit is wrong and no step offers another digit
    probs = _probs(_sure("LG-1234567-1"))
    assert ctc.constrained(probs, CHARSET, SERIAL, CHECK) is None


def test_a_missing_character_is_never_made_up() -> None:
    # six digits where the pattern needs seven: nothing offers the seventh
    probs = _probs(_sure("LG-123456-0"))
    assert ctc.constrained(probs, CHARSET, SERIAL, CHECK) is None


def test_a_digit_swap_the_checksum_allows_but_the_image_hardly_shows_is_refused() -> None:
    # The true serial is LG-1234567-0; the recogniser reads a 9 for the 7 and gives 8 a trace. LG-1234568-0
    # fails the check, LG-1234569-0 too: only a string whose probability is below the floor could pass.
    steps = _sure("LG-1234569-0")
    steps[9] = {"9": 0.97, "7": 1e-5}
    probs = _probs(steps)
    assert ctc.constrained(probs, CHARSET, SERIAL, CHECK) is None


def test_the_likeliest_valid_string_is_taken_over_a_less_likely_one() -> None:
    steps = _sure("LG-1234567-0")
    steps[1] = {"0": 0.5, "G": 0.3, "O": 0.15}
    found = ctc.constrained(_probs(steps), CHARSET, SERIAL, CHECK)
    assert found is not None and found.text == "LG-1234567-0"
