import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.data import corpus, text_files
from charlm.data.batches import StreamBatcher, sequential_windows
from charlm.data.corpus import build_corpus
from charlm.data.sequences import resolve_eos, split_sequences, to_sequences_stream
from charlm.data.text_files import iter_text, read_text
from charlm.data.tokenizer import Tokenizer
from charlm.errors import CheckpointError, ConfigError, CorpusError

NAMES = "emma\nolivia\nava\nisabella\nsophia\ncharlotte\nmia\namelia\n"


def write(tmp_path, data, name="c.txt"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# -- reading ---------------------------------------------------------------------------------

def test_read_text_strips_bom_and_normalises_newlines(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfa\r\nb\rc\n\r\nd\xc3\xa9\r")
    assert read_text(path) == "a\nb\nc\n\nd\u00e9\n"


def test_invalid_utf8_names_path_and_byte_offset(tmp_path, monkeypatch):
    data = "héllo wörld, ".encode() * 3 + b"\xff" + b"tail"
    path = write(tmp_path, data)
    with pytest.raises(CorpusError, match=rf"c\.txt: invalid UTF-8 at byte offset {len(data) - 5} "):
        read_text(path)
    monkeypatch.setattr(text_files, "CHUNK_BYTES", 5)  # the bad byte is in a later chunk
    with pytest.raises(CorpusError, match=rf"byte offset {len(data) - 5} \(byte 0xff\)"):
        read_text(path)
    assert read_text(path, errors="replace") == "héllo wörld, " * 3 + "\ufffdtail"
    truncated = write(tmp_path, "abc€".encode()[:-1], "t.txt")  # cut inside the last character
    with pytest.raises(CorpusError, match="byte offset 3"):
        read_text(truncated)


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"\xef\xbb\xbf", "is empty"),
    (b" \n\t\r\n  ", "only whitespace"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "looks like binary"),
    ("hello world\n".encode("utf-16"), "UTF-16"),
    ("hello world\n".encode("utf-16-le"), "looks like binary or UTF-16"),
    ("hello world\n".encode("utf-32"), "UTF-32"),
    (bytes(range(128, 256)) * 4, "looks like binary"),
])
def test_unusable_files_are_refused_clearly(tmp_path, data, message):
    with pytest.raises(CorpusError, match=message):
        read_text(write(tmp_path, data))


def test_missing_directory_and_unreadable(tmp_path, monkeypatch):
    with pytest.raises(CorpusError, match="nope.txt: no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="is a directory"):
        read_text(tmp_path)
    path = write(tmp_path, "abc")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(text_files, "open", denied, raising=False)
    with pytest.raises(CorpusError, match="cannot be read \\(Permission denied\\)"):
        read_text(path)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_chunks_never_split_characters_or_crlf(tmp_path, chunk):
    text = "a\r\nb\r\n\r\né😀日\rx\r\n" * 3
    path = write(tmp_path, "\ufeff" + text)
    pieces = list(iter_text(path, chunk_bytes=chunk))
    assert len(pieces) > 3 and all(pieces)
    assert "".join(pieces) == text.replace("\r\n", "\n").replace("\r", "\n")


# -- sequences -------------------------------------------------------------------------------

def test_split_sequences_modes():
    text = "\n  \nFirst:\nline one\n\n\n  \nSecond:\n  indented\n \nlast\n\n"
    assert split_sequences(text, "line") == ["First:", "line one", "Second:", "  indented", "last"]
    assert split_sequences(text, "paragraph") == ["First:\nline one", "Second:\n  indented", "last"]
    assert split_sequences(text, "none") == [text]
    assert split_sequences(" \n\n", "paragraph") == split_sequences(" \n", "line") == []
    with pytest.raises(ConfigError):
        split_sequences("a", "auto")


def test_resolve_eos_auto_on_synthetic_texts():
    names = "".join(f"name{i % 97}x\n" for i in range(500))
    sentences = "".join(f"Sentence number {i} is {'quite ' * (i % 9)}short.\n" for i in range(300))
    play = "".join(f"SPEAKER {i}:\nSome words here.\nAnd more words.\n\n" for i in range(100))
    wrapped_line = "the quick brown fox jumps over the lazy dog and keeps running far away\n"
    wrapped = wrapped_line * 200
    assert resolve_eos(names) == "line"
    assert resolve_eos(names[:-1] + "\n\n" + names) == "line"  # one stray blank line
    assert resolve_eos(sentences) == "line"
    assert resolve_eos(play) == "paragraph"
    assert resolve_eos(wrapped) == "none"  # hard-wrapped prose without blank lines
    assert resolve_eos("just one line of text") == "none"
    assert resolve_eos(names, "paragraph") == "paragraph"
    with pytest.raises(ConfigError):
        resolve_eos(names, "lines")


def test_stream_starts_and_ends_every_sequence_with_eos():
    tok = Tokenizer.fit(NAMES)
    ids = to_sequences_stream(NAMES, "auto", tok)
    assert ids.dtype == tok.id_dtype
    text = "".join("|" if i == 0 else tok.tokens[i] for i in ids)
    assert text == "|emma|olivia|ava|isabella|sophia|charlotte|mia|amelia|"
    words = Tokenizer.fit(NAMES, "word")
    assert to_sequences_stream("emma ava\nmia\n", "line", words).tolist() == \
        [0, *words.encode("emma ava"), 0, *words.encode("mia"), 0]
    para = to_sequences_stream("a\nb\n\n\nc", "paragraph", Tokenizer.fit("abc\n"))
    assert Tokenizer.fit("abc\n").decode(para) == "\na\nb\nc\n"


# -- building --------------------------------------------------------------------------------

def test_val_split_is_cut_at_a_sequence_boundary(tmp_path):
    c = build_corpus(write(tmp_path, NAMES * 20), val_fraction=0.1)
    assert c.eos == "line" and c.train[0] == 0 and c.train[-1] == 0 and c.val[0] == 0
    total = len(to_sequences_stream(NAMES * 20, "line", c.tokenizer))
    assert len(c.train) + len(c.val) == total + 1  # the boundary <eos> is in both parts
    assert abs(len(c.val) - 0.1 * total) <= 0.025 * total
    assert not c.train.flags.writeable and isinstance(c.train, np.ndarray)
    assert build_corpus(write(tmp_path, NAMES), val_fraction=0).val.size == 0


def test_val_split_without_boundaries_cuts_exactly(tmp_path):
    c = build_corpus(write(tmp_path, "abcdefghij" * 10), eos="none", val_fraction=0.2)
    assert (len(c.train), len(c.val)) == (82, 20)  # 100 chars + 2 <eos>, 20% held out


def test_vocabulary_is_fitted_on_the_training_part_only(tmp_path):
    text = "abc\n" * 50 + "abz\n" * 5  # z only appears in the validation tail
    c = build_corpus(write(tmp_path, text), val_fraction=0.1)
    assert "z" not in c.tokenizer.tokens
    s = c.stats()
    assert s["val_unknown"] == 5 and s["train_unknown"] == 0 and s["vocab_size"] == 5
    assert s["unknown"] == 5 and s["tokens"] == len(c.train) + len(c.val)
    assert s["train_sequences"] + s["val_sequences"] == 55
    # a given tokenizer is reused as is; unknown tokens become <unk>
    again = build_corpus(write(tmp_path, "abz\n", "eval.txt"), tokenizer=c.tokenizer, eos="line",
                         val_fraction=0)
    assert again.tokenizer is c.tokenizer and again.stats()["train_unknown"] == 1


def test_min_count_and_max_vocab_count_the_training_part_only(tmp_path):
    # q: 3 times in training, 6 in validation (9 in all); x: 5 times in training
    text = "aaq\n" * 3 + "abx\n" * 5 + "aab\n" * 80 + "qqa\n" * 3 + "aab\n" * 7
    c = build_corpus(write(tmp_path, text), val_fraction=0.1, min_count=4)
    assert "q" not in c.tokenizer.tokens and "x" in c.tokenizer.tokens
    assert c.tokenizer.decode(c.val).count("<unk>") == 6
    top = build_corpus(write(tmp_path, text), val_fraction=0.1, max_vocab=4)  # <eos> <unk> a b
    assert top.tokenizer.tokens[2:] == ["a", "b"]
    for part in (c.train, c.val, top.train, top.val):
        assert not part.flags.writeable


def test_val_file_and_several_documents(tmp_path):
    a, b = write(tmp_path, "one\ntwo", "a.txt"), write(tmp_path, "three\n", "b.txt")
    v = write(tmp_path, "two\nfour\n", "v.txt")
    c = build_corpus([a, b], val_file=v)
    dec = c.tokenizer.decode
    assert dec(c.train) == "\none\ntwo\nthree\n"  # each document ends with <eos>
    assert dec(c.val) == "\ntwo\n<unk>o<unk>r\n"  # f and u never occur in training
    assert c.sources == [str(a), str(b)] and c.val_source == str(v)


def test_word_level_corpus(tmp_path):
    c = build_corpus(write(tmp_path, "the cat sat\nthe dog\n" * 10 + "a zebra\n"),
                     level="word", val_fraction=0.05, min_count=2)
    assert c.tokenizer.level == "word" and "zebra" not in c.tokenizer.tokens
    assert c.tokenizer.decode(c.val).endswith("<unk> <unk>\n")


def test_too_little_text_is_refused(tmp_path):
    with pytest.raises(CorpusError, match="too few"):
        build_corpus(write(tmp_path, "a"), val_fraction=0.5)
    with pytest.raises(ConfigError):
        build_corpus(write(tmp_path, "abc"), val_fraction=1.0)
    with pytest.raises(ConfigError):
        build_corpus(write(tmp_path, "abc"), eos="sentences")
    with pytest.raises(CorpusError, match="no such file"):
        build_corpus([tmp_path / "missing.txt"])


def test_cache_dir_gives_read_only_memmaps_equal_to_memory(tmp_path):
    path = write(tmp_path, NAMES * 30)
    mem = build_corpus(path)
    mapped = build_corpus(path, cache_dir=tmp_path / "cache")
    assert isinstance(mapped.train, np.memmap) and isinstance(mapped.val, np.memmap)
    assert (tmp_path / "cache" / "train.ids").stat().st_size == len(mapped.train)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["train.ids", "val.ids"]
    assert mapped.tokenizer == mem.tokenizer
    assert np.array_equal(mapped.train, mem.train) and np.array_equal(mapped.val, mem.val)
    with pytest.raises(ValueError):
        mapped.train[0] = 1
    rebuilt = build_corpus(path, cache_dir=tmp_path / "cache", val_fraction=0.5)
    assert np.array_equal(mapped.train, mem.train)  # rebuilding the cache keeps old maps valid
    assert len(rebuilt.val) > len(mem.val)


TRICKY = ("\ufeffFirst:\r\nline é😀\r\n\r\n \r\n\r\nSecond 日本:\n  x\r\n\n\nthird\r"
          "fourth line\r\n\r\n\r\n" + "word " * 7 + "\n\n")


@pytest.mark.parametrize("eos", ["line", "paragraph", "none"])
@pytest.mark.parametrize("level", ["char", "word"])
def test_chunked_large_path_equals_small_path(tmp_path, monkeypatch, eos, level):
    path = write(tmp_path, TRICKY * 3)
    small = build_corpus(path, eos=eos, level=level, val_fraction=0.3)
    reference = to_sequences_stream(read_text(path), eos, small.tokenizer)
    assert np.array_equal(np.concatenate([small.train, small.val[1:]]), reference) or \
        np.array_equal(np.concatenate([small.train, small.val]), reference)
    monkeypatch.setattr(corpus, "LARGE_BYTES", 0)
    for chunk in (1, 2, 3, 4, 7, 16):
        monkeypatch.setattr(text_files, "CHUNK_BYTES", chunk)
        big = build_corpus(path, eos=eos, level=level, val_fraction=0.3)
        assert isinstance(big.train, np.memmap)
        assert big.tokenizer == small.tokenizer
        assert np.array_equal(big.train, small.train) and np.array_equal(big.val, small.val)


@given(st.text(st.sampled_from("ab é😀\n\n\r\t"), min_size=1, max_size=40),
       st.integers(1, 9), st.sampled_from(["line", "paragraph", "none"]),
       st.sampled_from(["char", "word"]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_chunked_stream_equals_whole_text_stream(tmp_path, monkeypatch, text, chunk, eos, level):
    path = write(tmp_path, "x" + text + "y")
    monkeypatch.setattr(corpus, "LARGE_BYTES", 0)
    monkeypatch.setattr(text_files, "CHUNK_BYTES", chunk)
    c = build_corpus(path, eos=eos, level=level, val_fraction=0)
    assert np.array_equal(c.train, to_sequences_stream(read_text(path), eos, c.tokenizer))


# -- batches ---------------------------------------------------------------------------------

def test_stream_batcher_shapes_contents_and_wrap():
    ids = np.arange(103, dtype=np.uint16)
    b = StreamBatcher(ids, batch_size=4, seq_len=5)
    n = (103 - 1) // 4  # 25 tokens per stream -> 5 windows
    assert b.windows_per_epoch == 5 and (b.epoch, b.position) == (0, 0)
    for w in range(5):
        x, y = b.next_batch()
        assert x.shape == y.shape == (5, 4) and x.dtype == y.dtype == np.int64
        for t in range(5):
            for col in range(4):
                assert x[t, col] == col * n + w * 5 + t and y[t, col] == x[t, col] + 1
    assert (b.epoch, b.position) == (1, 0)
    x, _ = b.next_batch()
    assert x[0].tolist() == [0, 25, 50, 75] and b.position == 1


def test_stream_batcher_resume_gives_the_same_next_batch():
    ids = np.random.default_rng(0).integers(0, 50, 1000).astype(np.uint8)
    a = StreamBatcher(ids, 3, 7)
    for _ in range(60):
        a.next_batch()
    state = a.state_dict()
    assert state == {"epoch": 1, "position": 13}
    b = StreamBatcher(ids, 3, 7)
    b.load_state_dict(state)
    for _ in range(5):
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    with pytest.raises(CheckpointError):
        b.load_state_dict({"epoch": 0, "position": 999})
    with pytest.raises(CheckpointError):
        b.load_state_dict({"position": 0})
    with pytest.raises(ConfigError):
        b.position = -1


def test_stream_batcher_too_short_names_numbers_and_largest_batch():
    with pytest.raises(ConfigError, match=r"101 tokens.*batch_size 32 x seq_len 10.*largest batch_size that fits is 10"):
        StreamBatcher(np.zeros(101, np.uint8), 32, 10)
    with pytest.raises(ConfigError, match="seq_len <= 4"):
        StreamBatcher(np.zeros(5, np.uint8), 1, 10)
    StreamBatcher(np.zeros(101, np.uint8), 10, 10)  # exactly fits


def test_stream_batcher_reads_memmaps(tmp_path):
    c = build_corpus(write(tmp_path, NAMES * 30), cache_dir=tmp_path / "cache")
    x, y = StreamBatcher(c.train, 4, 8).next_batch()
    assert x.shape == (8, 4) and np.array_equal(x[1:], y[:-1]) and x[0, 0] == 0


@pytest.mark.parametrize("n, seq_len", [(1, 4), (2, 4), (10, 3), (13, 4), (9, 100)])
def test_sequential_windows_cover_every_id_once(n, seq_len):
    ids = np.arange(n, dtype=np.uint8)
    windows = list(sequential_windows(ids, seq_len))
    xs = np.concatenate([x[:, 0] for x, _ in windows]) if windows else np.zeros(0)
    ys = np.concatenate([y[:, 0] for _, y in windows]) if windows else np.zeros(0)
    assert xs.tolist() == list(range(n - 1)) and ys.tolist() == list(range(1, n))
    assert all(x.shape == y.shape and x.shape[1] == 1 and x.shape[0] <= seq_len
               for x, y in windows)


def test_large_input_without_cache_dir_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "LARGE_BYTES", 0)
    monkeypatch.setattr(corpus.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    c = build_corpus(write(tmp_path, NAMES * 10))
    assert isinstance(c.train, np.memmap) and c.train[0] == 0 and len(c.val) > 0
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(CorpusError, match="too few"):
        build_corpus(write(tmp_path, "a"), val_fraction=0.5, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
