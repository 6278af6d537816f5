"""Untrusted checkpoints and tokenizer JSON: nothing a stranger's file holds may run code, allocate
gigabytes or escape as anything but charlm's own error.

Every case below either loads (and is then internally consistent) or raises ``CharlmError`` with a
one-line message. Fuzz budget: 1,350 hypothesis examples (800 on the loader and resume path, 550
on tokenizer JSON) plus every truncation point of a real model.safetensors and last.safetensors
(~10,800 more), about 10 s.
"""
import ast
import itertools
import json
import math
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charlm
from charlm.config import ModelConfig, TrainConfig
from charlm.data.corpus import build_corpus
from charlm.data.tokenizer import Tokenizer
from charlm.errors import CharlmError, CheckpointError
from charlm.lm import checkpoint as ckpt
from charlm.lm.model import parameter_shapes
from charlm.lm.sample import Sampler
from charlm.lm.train import Trainer

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
                    max_leaves=12)


# ---------------------------------------------------------------------------------------------
# fixtures: one real run (model.safetensors + last.safetensors), made once


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    corpus_path = root / "corpus.txt"
    corpus_path.write_text("abcabd cab dab\n" * 30, encoding="utf-8")
    corpus = build_corpus([corpus_path], val_fraction=0.2)
    trainer = Trainer(corpus, ModelConfig(cell="lstm", embed=3, hidden=4, layers=2),
                      TrainConfig(steps=2, seq_len=8, batch_size=2, eval_every=2), root / "run")
    list(trainer.events())
    return root


def split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def craft(header, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


_serial = itertools.count()


def outcome(path: Path, data: bytes) -> str:
    """Write ``data`` and load it: 'loaded' (consistent) or 'refused' (one-line CharlmError).

    Each case gets a fresh file name (rewriting one file in place is ~10x slower on this disk)."""
    path = path.with_name(f"{path.stem}-{next(_serial)}{path.suffix}")
    path.write_bytes(data)
    try:
        loaded = ckpt.load_checkpoint(path)
    except CharlmError as e:
        msg = str(e)
        assert msg and "\n" not in msg and len(msg) < 600, msg
        return "refused"
    finally:
        path.unlink()
    assert len(loaded.tokenizer) == loaded.config.vocab_size
    assert dict(parameter_shapes(loaded.config)).items() <= {k: v.shape for k, v in loaded.tensors.items()}.items()
    for a in list(loaded.tensors.values()) + list(loaded.extra.values()):
        assert np.isfinite(a).all()
    Sampler.from_checkpoint(loaded)  # what sampling reads (weights, start state) is usable too
    return "loaded"


def good(run, name=ckpt.LAST_FILE) -> bytes:
    return (run / "run" / name).read_bytes()


# ---------------------------------------------------------------------------------------------
# 1. no pickle anywhere


BANNED_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}


def test_package_source_never_unpickles_or_evaluates():
    """AST scan (docstrings may say "no pickle"; code may not use it)."""
    offences = []
    for path in sorted(Path(charlm.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                offences += [where for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in BANNED_MODULES:
                offences.append(where)
            elif isinstance(node, ast.Attribute) and node.attr in ("load", "loads", "Unpickler") \
                    and isinstance(node.value, ast.Name) and node.value.id in BANNED_MODULES | {"np", "numpy", "torch"}:
                offences.append(f"{where} {node.value.id}.{node.attr}")   # np.load / torch.load / pickle.load
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                offences.append(f"{where} allow_pickle")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                    node.func.id in ("eval", "exec") or node.func.id == "__import__" and not (
                        node.args and isinstance(node.args[0], ast.Constant)
                        and str(node.args[0].value).startswith("charlm."))):
                offences.append(f"{where} {node.func.id}()")  # (importing charlm's own modules is fine)
    assert offences == []


def test_loading_resuming_and_sampling_never_call_the_unpickler(run, monkeypatch):
    """Dynamic check. Numba's on-disk kernel cache *is* pickled, but it is written by this
    machine into charlm's own __pycache__ (or NUMBA_CACHE_DIR), never taken from a user: so the
    kernels are warmed up first, then any unpickling fails the test."""
    import pickle

    def everything():
        loaded = ckpt.load_checkpoint(run / "run")
        text = charlm.generate_text(loaded, "ab", max_length=5, seed=0)
        Trainer.resume(run / "run", lambda tok, tcfg, sources: build_corpus(
            [run / "corpus.txt"], val_fraction=0.2, tokenizer=tok))
        return text

    expected = everything()

    def refuse(*a, **k):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    assert everything() == expected


# ---------------------------------------------------------------------------------------------
# 2. truncation at every byte, byte flips, hand-crafted headers


@pytest.mark.parametrize("name", [ckpt.MODEL_FILE, ckpt.LAST_FILE])
def test_every_truncation_is_refused(run, name, tmp_path):
    data = good(run, name)
    (n,) = struct.unpack("<Q", data[:8])
    assert 8 < 8 + n < len(data)  # header length, header JSON and data regions all exist
    for cut in range(len(data)):  # every point of every region
        assert outcome(tmp_path / "t.safetensors", data[:cut]) == "refused", cut
    assert outcome(tmp_path / "t.safetensors", data) == "loaded"


@settings(FUZZ, max_examples=300)
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=6),
       which=st.sampled_from([ckpt.MODEL_FILE, ckpt.LAST_FILE]))
def test_random_byte_flips_load_or_refuse(run, flips, which):
    data = bytearray(good(run, which))
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    outcome(run / "flip.safetensors", bytes(data))


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_mutated_header_fields_load_or_refuse(run, data):
    header, body = split(good(run))
    name = data.draw(st.sampled_from(sorted(header)))
    if name == "__metadata__":
        key = data.draw(st.sampled_from(sorted(header[name])))
        header[name][key] = data.draw(st.one_of(JSON.map(json.dumps), st.text(max_size=20), JSON))
    else:
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra", None]))
        value = data.draw(st.one_of(JSON, st.sampled_from(["F16", "BF16", "I64", "BOOL", "U8", "F64"]),
                                    st.lists(st.integers(0, 2**64 - 1), max_size=3)))
        if field is None:
            header[name] = value
        else:
            header[name][field] = value
    outcome(run / "hdr.safetensors", craft(header, body))


@settings(FUZZ, max_examples=150)
@given(changes=st.dictionaries(st.sampled_from(["cell", "vocab_size", "embed", "hidden", "layers",
                                                "dropout", "tie_weights", "bogus"]),
                               st.one_of(st.integers(-3, 10), st.sampled_from([10**9, 2**62, 2**64 + 4]),
                                         JSON), min_size=1, max_size=3),
       retarget=st.booleans())
def test_stored_config_mismatches_are_refused_before_allocation(run, changes, retarget):
    """A changed configuration, optionally with the header's shapes rewritten to agree with it
    (offsets kept): absurd sizes must be refused without allocating them."""
    header, body = split(good(run, ckpt.MODEL_FILE))
    meta = header["__metadata__"]
    config = json.loads(meta["charlm.config"]) | changes
    meta["charlm.config"] = json.dumps(config)
    if retarget:
        try:  # (the test's own shape list must stay small: the loader is what is under test)
            shapes = dict(parameter_shapes(ModelConfig(**config).validate())) \
                if config.get("layers", 0) < 100 else {}
        except (CharlmError, TypeError, KeyError):
            shapes = {}
        for name, shape in shapes.items():
            if name in header:
                header[name]["shape"] = list(shape)
    tracemalloc.start()
    try:
        result = outcome(run / "cfg.safetensors", craft(header, body))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    if result == "loaded":  # only changes that keep every tensor as it was can load
        original = {k: v["shape"] for k, v in split(good(run, ckpt.MODEL_FILE))[0].items() if k != "__metadata__"}
        assert {k: v["shape"] for k, v in header.items() if k != "__metadata__"} == original


def _bomb(tmp_path, header, body=b""):
    """Refused without tensor-sized allocations (counted in bytes, not timed)."""
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError):
            path = tmp_path / "bomb.safetensors"
            path.write_bytes(header if isinstance(header, bytes) else craft(header, body))
            ckpt.load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_memory_bombs_are_refused_quickly(run, tmp_path):
    header, body = split(good(run, ckpt.MODEL_FILE))
    meta = header["__metadata__"]
    # header length far beyond the file
    _bomb(tmp_path, struct.pack("<Q", 2**63) + b"{}")
    _bomb(tmp_path, struct.pack("<Q", 2**40) + b"{" + b" " * 100)
    # one tensor declaring a terabyte
    _bomb(tmp_path, {"__metadata__": meta, "x": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}})
    # int64 wrap-around: 2**32 * 2**32 * 4 bytes is 0 mod 2**64
    _bomb(tmp_path, {"__metadata__": meta, "x": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}})
    _bomb(tmp_path, {"__metadata__": meta, "x": {"dtype": "F32", "shape": [2**70], "data_offsets": [0, 0]}})
    # absurd configurations: consistent with the header's shapes (which then exceed the file),
    # and inconsistent with a tiny header (which must not make us build a billion-layer list)
    for change in ({"hidden": 10**9}, {"embed": 10**9}, {"layers": 10**9}, {"layers": 10**6, "hidden": 1}):
        config = json.loads(meta["charlm.config"]) | change
        m2 = meta | {"charlm.config": json.dumps(config)}
        _bomb(tmp_path, {"__metadata__": m2} | {k: v for k, v in header.items() if k != "__metadata__"}, body)
        if "layers" not in change:
            crafted = {"__metadata__": m2}
            for name, shape in parameter_shapes(ModelConfig(**config)):
                nbytes = math.prod(shape) * 4
                crafted[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [0, nbytes]}
            _bomb(tmp_path, crafted, body)


def test_wrong_dtypes_missing_extra_tensors_and_nan_weights(run, tmp_path):
    header, body = split(good(run, ckpt.MODEL_FILE))
    path = tmp_path / "x.safetensors"

    def refused_with(h, b, words):
        path.write_bytes(craft(h, b))
        with pytest.raises(CheckpointError) as e:
            ckpt.load_checkpoint(path)
        assert all(w in str(e.value) for w in words), str(e.value)

    for dtype in ("F16", "I64", "BOOL", "BF16"):
        h = json.loads(json.dumps(header))
        h["decoder.bias"]["dtype"] = dtype
        refused_with(h, body, ["decoder.bias", dtype])
    h = json.loads(json.dumps(header))
    del h["decoder.bias"]
    refused_with(h, body, ["tensors"])
    h = json.loads(json.dumps(header))
    h["rnn.weight_ih_l7"] = dict(h["decoder.bias"])
    refused_with(h, body, ["tensors"])
    h = json.loads(json.dumps(header))
    h["encoder.weight"]["shape"] = h["encoder.weight"]["shape"][::-1]
    refused_with(h, body, ["encoder.weight", "shape"])
    for value in (np.nan, np.inf):
        b = bytearray(body)
        begin = h["decoder.bias"]["data_offsets"][0]
        b[begin:begin + 4] = np.float32(value).tobytes()
        refused_with(header, bytes(b), ["decoder.bias", "NaN"])
    for meta_change in ({"charlm.format": "99"}, {"charlm.config": "{"}, {"charlm.vocab": "[]"},
                        {"charlm.tokenizer": "null"}, {"charlm.config": "[" * 50_000},
                        {"charlm.train_config": "[1]"}, {"charlm.step": "\"ten\""}):
        h = json.loads(json.dumps(header))
        h["__metadata__"].update(meta_change)
        refused_with(h, body, [])
    h = json.loads(json.dumps(header))
    del h["__metadata__"]
    refused_with(h, body, ["not a charlm checkpoint"])
    for raw in (b"", b"\x00" * 7, b"PK\x03\x04" + b"\x00" * 100, b"\x80\x04\x95" + b"\x00" * 50,
                struct.pack("<Q", 2) + b"[]", struct.pack("<Q", 6) + b"\xff\xfe{}{}"):
        path.write_bytes(raw)
        with pytest.raises(CheckpointError):
            ckpt.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path)  # a directory without one


# ---------------------------------------------------------------------------------------------
# 3. the resume path: malformed training state in last.safetensors


@settings(FUZZ, max_examples=100)
@given(key=st.sampled_from(["train_config", "optimizer", "schedule", "batcher", "rng", "position", "step",
                            "best_val_loss", "sources", "train_tokens", "eos", "start_state"]),
       value=JSON, nested=st.booleans())
def test_malformed_training_state_refuses_to_resume(run, key, value, nested):
    src = run / "run"
    dst = run / "resume"
    dst.mkdir(exist_ok=True)
    header, body = split(good(run))
    meta = header["__metadata__"]
    current = json.loads(meta[f"charlm.{key}"])
    if nested and isinstance(current, dict) and current:
        current[sorted(current)[len(str(value)) % len(current)]] = value
    else:
        current = value
    meta[f"charlm.{key}"] = json.dumps(current)
    (dst / ckpt.LAST_FILE).write_bytes(craft(header, body))
    (dst / ckpt.MODEL_FILE).write_bytes((src / ckpt.MODEL_FILE).read_bytes())
    try:
        trainer = Trainer.resume(dst, lambda tok, tcfg, sources: build_corpus(
            [run / "corpus.txt"], val_fraction=0.2, tokenizer=tok, eos=tcfg.eos))
    except CharlmError as e:
        assert "\n" not in str(e)
        return
    assert trainer.pos.step >= 0


# ---------------------------------------------------------------------------------------------
# 4. tokenizer JSON


TOKENIZER = {"format": "charlm-tokenizer", "version": 1, "level": "char", "split": "", "tokens": ["<eos>", "<unk>", "a", "b"]}


def _tok_outcome(value):
    try:
        tok = Tokenizer.from_json(value) if isinstance(value, (str, bytes)) else Tokenizer.from_dict(value)
    except CharlmError as e:
        assert "\n" not in str(e) or "\\n" in repr(str(e))
        return
    assert tok.tokens[:2] == ["<eos>", "<unk>"] and len(set(tok.tokens)) == len(tok)
    tok.decode(tok.encode("ab\u00e9"))


@settings(FUZZ, max_examples=300)
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40), JSON.map(json.dumps), JSON,
                 st.sampled_from(["[" * 100_000, "{\"a\":" * 5000, "NaN", "1e999", "\"\\ud800\""])))
def test_tokenizer_json_arbitrary_input(value):
    _tok_outcome(value)


@settings(FUZZ, max_examples=250)
@given(key=st.sampled_from(sorted(TOKENIZER) + ["extra"]), value=JSON,
       tokens=st.lists(st.one_of(st.characters(), st.text(max_size=3), JSON), max_size=6),
       level=st.sampled_from(["char", "word"]), as_text=st.booleans())
def test_tokenizer_json_mutations(key, value, tokens, level, as_text):
    d = dict(TOKENIZER, level=level, split="" if level == "char" else "whitespace")
    d[key] = value
    if key != "tokens":
        d["tokens"] = ["<eos>", "<unk>"] + tokens
    _tok_outcome(json.dumps(d) if as_text else d)
