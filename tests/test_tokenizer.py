import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.data.tokenizer import EOS, UNK, Tokenizer, byte_counts
from charlm.errors import CharlmError, ConfigError, VocabError

HARD = "naïve café, Ångström; 日本語の文; emoji 😀🎉 (astral); e\u0301 combining, \t tab\nnew line"


def test_char_round_trip_accents_cjk_emoji_combining():
    tok = Tokenizer.fit([HARD])
    ids = tok.encode(HARD)
    assert ids.dtype == np.int32 and len(ids) == len(HARD)
    assert tok.decode(ids) == HARD
    assert tok.count_unknown(HARD) == 0


def test_char_vocab_is_specials_then_code_point_order_and_chunking_does_not_matter():
    tok = Tokenizer.fit(["banana", "😀é", "ab"])
    assert tok.tokens == [EOS, UNK, "a", "b", "n", "é", "😀"]
    assert Tokenizer.fit(["ab", "é😀", "nanaba"]) == tok
    assert Tokenizer.fit("banana😀éab") == tok  # a single string is one chunk
    assert (tok.eos_id, tok.unk_id, len(tok)) == (0, 1, 7)


def test_char_literal_specials_are_ordinary_characters():
    tok = Tokenizer.fit(["<eos> and <unk>"])
    ids = tok.encode("<eos>")
    assert len(ids) == 5 and 0 not in ids and 1 not in ids
    assert tok.decode([0, *ids, 0]) == "\n<eos>\n"


def test_char_unknowns_map_to_unk_in_every_code_point_range():
    tok = Tokenizer.fit(["abc\u4e00😀"])
    # unknown ASCII, unknown below/above the dense table, unknown astral, lone surrogate
    text = "aZ\u00e9\u4e00\uffff😀🎉\udcff"
    ids = tok.encode(text)
    assert ids.tolist() == [2, 1, 1, 5, 1, 6, 1, 1]
    assert tok.count_unknown(text) == 5


@given(st.text(max_size=60), st.text(max_size=60))
@settings(max_examples=150, deadline=None)
def test_char_encode_matches_naive_lookup(fit_text, text):
    fit_text = fit_text.encode("utf-8", "replace").decode("utf-8", "replace")  # no surrogates
    tok = Tokenizer.fit([fit_text])
    index = {t: i for i, t in enumerate(tok.tokens)}
    assert tok.encode(text).tolist() == [index.get(c, 1) for c in text]


def test_strict_error_names_unknown_characters():
    tok = Tokenizer.fit(["helowrd"])
    with pytest.raises(VocabError) as e:
        tok.encode("hello wörld 😀 wörld", strict=True)
    msg = str(e.value)
    assert msg.startswith("6 unknown") and "' ', 'ö', '😀'" in msg  # first-appearance order
    assert "\n" not in msg
    with pytest.raises(VocabError, match="'4', '5' and 5 more$"):
        tok.encode("1234567890", strict=True)
    assert tok.encode("hello", strict=True).tolist() == tok.encode("hello").tolist()


def test_id_dtype_is_smallest_unsigned():
    assert Tokenizer("char", [EOS, UNK] + [chr(0x100 + i) for i in range(254)]).id_dtype == np.uint8
    assert Tokenizer("char", [EOS, UNK] + [chr(0x100 + i) for i in range(255)]).id_dtype == np.uint16
    words = [EOS, UNK] + [f"w{i}" for i in range(65535)]
    assert Tokenizer("word", words, "whitespace").id_dtype == np.uint32
    assert Tokenizer("word", words[:-1], "whitespace").id_dtype == np.uint16
    tok = Tokenizer.fit(["abc"])
    assert tok.encode("cab", dtype=tok.id_dtype).dtype == np.uint8


def test_word_level_counts_order_min_count_max_vocab():
    text = "the cat sat on the mat . the cat ran"
    tok = Tokenizer.fit([text], "word")
    assert tok.tokens == [EOS, UNK, "the", "cat", ".", "mat", "on", "ran", "sat"]  # (-count, token)
    assert Tokenizer.fit([text], "word", min_count=2).tokens == [EOS, UNK, "the", "cat"]
    small = Tokenizer.fit([text], "word", max_vocab=4)  # max_vocab counts the two specials
    assert small.tokens == [EOS, UNK, "the", "cat"] and len(small) == 4
    assert small.encode("the dog sat").tolist() == [2, 1, 1]
    assert small.count_unknown("the dog sat") == 2
    with pytest.raises(VocabError, match="'dog'"):
        small.encode("the dog sat", strict=True)


def test_word_level_literal_specials_and_decode():
    tok = Tokenizer.fit(["a b <eos> c <unk> a"], "word")
    assert EOS not in tok.tokens[2:] and UNK not in tok.tokens[2:]
    assert tok.encode("a <eos> zzz <unk>").tolist() == [2, 0, 1, 1]
    assert tok.count_unknown("a <eos> zzz <unk>") == 1  # only zzz is out of vocabulary
    a, b = tok.encode("a b").tolist()
    assert tok.decode([0, a, b, 0, b, 0]) == "\na b\nb\n"


def test_word_split_words_separates_punctuation():
    tok = Tokenizer.fit(["Hello, world! It's <eos> fine."], "word", split="words")
    assert set(tok.tokens[2:]) == {"Hello", ",", "world", "!", "It", "'", "s", "fine", "."}
    assert tok.decode(tok.encode("Hello, world!")) == "Hello , world !"
    assert tok.encode("fine<eos>")[-1] == 0


@pytest.mark.parametrize("level", ["char", "word"])
def test_json_round_trip(level):
    tok = Tokenizer.fit([HARD], level, split="words")
    s = tok.to_json()
    assert json.loads(s)["tokens"] == tok.tokens
    back = Tokenizer.from_json(s)
    assert back == tok and back.split == tok.split and back.level == level
    assert Tokenizer.from_dict(tok.to_dict()) == tok
    bare = {k: v for k, v in tok.to_dict().items() if k not in ("format", "version")}
    assert Tokenizer.from_dict(bare) == tok  # a checkpoint may store format/version itself
    assert back.encode(HARD).tolist() == tok.encode(HARD).tolist()


GOOD = {"format": "charlm-tokenizer", "version": 1, "level": "char", "split": "",
        "tokens": [EOS, UNK, "a", "b"]}


@pytest.mark.parametrize("change", [
    {"tokens": [UNK, EOS, "a"]},               # specials swapped
    {"tokens": [EOS]},                          # too short
    {"tokens": [EOS, UNK, "a", "a"]},          # duplicate
    {"tokens": [EOS, UNK, "ab"]},              # char token of two characters
    {"tokens": [EOS, UNK, ""]},
    {"tokens": [EOS, UNK, 3]},
    {"tokens": [EOS, UNK, EOS]},
    {"tokens": [EOS, UNK, "\udcff"]},           # lone surrogate: not valid Unicode
    {"tokens": "ab"},
    {"level": "byte"}, {"level": None},
    {"split": "whitespace"},                    # char level has no split
    {"level": "word", "split": "", "tokens": [EOS, UNK, "a"]},
    {"level": "word", "split": "whitespace", "tokens": [EOS, UNK, "a b"]},
    {"version": 2}, {"version": True}, {"version": "1"},
    {"format": "other"},
    {"extra": 1},
])
def test_from_dict_rejects_malformed(change):
    with pytest.raises(VocabError):
        Tokenizer.from_dict({**GOOD, **change})


@pytest.mark.parametrize("bad", [None, [], "x", {}, {k: v for k, v in GOOD.items() if k != "tokens"}])
def test_from_dict_rejects_non_tokenizers(bad):
    with pytest.raises(VocabError):
        Tokenizer.from_dict(bad)


@pytest.mark.parametrize("bad", ["", "{", "[" * 100000, b"\xff", "null", 42])
def test_from_json_rejects_garbage(bad):
    with pytest.raises(VocabError):
        Tokenizer.from_json(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
fuzzed_dicts = st.fixed_dictionaries(
    {k: st.one_of(st.just(v), json_values) for k, v in GOOD.items()},
    optional={"extra": json_values}) | st.fixed_dictionaries({
        "format": st.just("charlm-tokenizer"), "version": st.just(1),
        "level": st.sampled_from(["char", "word"]),
        "split": st.sampled_from(["", "whitespace", "words"]),
        "tokens": st.lists(st.sampled_from([EOS, UNK, "a", "b", "ab", " ", "", "\udcff", "é"]),
                           max_size=6)})


@given(st.one_of(json_values, fuzzed_dicts))
@settings(max_examples=200, deadline=None)
def test_from_dict_fuzz_raises_only_charlm_errors(d):
    try:
        tok = Tokenizer.from_dict(d)
    except CharlmError:
        return
    assert Tokenizer.from_json(tok.to_json()) == tok  # whatever loads must save and reload


def test_fit_and_decode_argument_errors():
    with pytest.raises(ConfigError):
        Tokenizer.fit(["a"], "byte")
    with pytest.raises(ConfigError):
        Tokenizer.fit(["a"], "word", split="regex")
    with pytest.raises(ConfigError):
        Tokenizer.fit(["a"], max_vocab=2)
    with pytest.raises(ConfigError):
        Tokenizer.fit(["a"], min_count=0)
    with pytest.raises(VocabError, match="lone surrogate"):
        Tokenizer.fit(["a\udcff"])
    tok = Tokenizer.fit(["ab"])
    with pytest.raises(VocabError, match="4"):
        tok.decode([2, 4])
    with pytest.raises(VocabError):
        tok.decode([-1])


def test_char_max_vocab_and_min_count_keep_frequent_characters_in_code_point_order():
    tok = Tokenizer.fit(["zzzzyyyxxw"], max_vocab=4)
    assert tok.tokens == [EOS, UNK, "y", "z"]
    assert Tokenizer.fit(["zzzzyyyxxw"], min_count=2).tokens == [EOS, UNK, "x", "y", "z"]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 1001])
def test_byte_counts_equals_bincount(n):
    b = np.random.default_rng(n).integers(0, 256, n).astype(np.uint8)
    np.testing.assert_array_equal(byte_counts(b), np.bincount(b, minlength=256))


def test_ascii_fast_path_equals_the_gather():
    tok = Tokenizer.fit("hello world\tabc")           # uint8 ids: the bytes.translate path
    text = "hello, world!\x00\x7f zebra"               # unknown ASCII characters become <unk>
    ids = tok.encode(text)
    expected = tok._table[np.frombuffer(text.encode("ascii"), np.uint8)]
    np.testing.assert_array_equal(ids, expected)
    ids[0] = 0  # the result is an ordinary writable array
    assert tok.decode(tok.encode("hello world")) == "hello world"
