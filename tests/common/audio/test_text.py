import pytest

from common.audio.text import ALPHABET, BOS, EOS, PAD, CharTokenizer, cardinal, normalize, ordinal, words, year


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("Mr. Smith paid $5.50 for 3 apples in 1984!", "mister smith paid five dollars fifty cents for three apples in "
         "nineteen eighty four!"),
        ("The 1960s were 50% fun -- or not...", "the nineteen sixties were fifty percent fun or not."),
        ("He came 21st; she came 2nd.", "he came twenty first, she came second."),
        ('Caf\u00e9 & "bar" (open 24/7)', "cafe and bar open twenty four seven"),
        ("I.e. 1,000,000 people?!", "that is one million people?"),
        ("Don't  'quote' me", "don't quote me"),
        ("In 2005, 1900 and 1907: x = 3.14", "in two thousand five, nineteen hundred and nineteen oh seven, x equals "
         "three point one four"),
    ],
)  # fmt: skip
def test_normalize_examples(written, spoken):
    assert normalize(written) == spoken
    assert normalize(spoken) == spoken  # idempotent
    assert set(spoken) <= set(ALPHABET)


def test_numbers_in_words():
    assert cardinal(0) == "zero"
    assert cardinal(115) == "one hundred fifteen"
    assert cardinal(2_000_017) == "two million seventeen"
    assert ordinal(3) == "third" and ordinal(40) == "fortieth" and ordinal(112) == "one hundred twelfth"
    assert year(1066) == "ten sixty six" and year(2000) == "two thousand"
    assert year(2024) == "twenty twenty four"


def test_words_drop_punctuation():
    assert words("Hello, World! It's 2 o'clock.") == "hello world it's two o'clock"


def test_tokenizer_round_trip_and_specials():
    tokenizer = CharTokenizer()
    text = normalize("Why, 7 days a week? Don't ask!")
    ids = tokenizer.encode(text)
    assert ids[0] == BOS and ids[-1] == EOS and PAD not in ids
    assert min(ids[1:-1]) >= 3 and max(ids) < tokenizer.vocab_size
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode(text, bos=False, eos=False) == ids[1:-1]


def test_tokenizer_refuses_unnormalised_text():
    with pytest.raises(ValueError, match="'H'"):
        CharTokenizer().encode("Hello")
