"""``charlm train NEW.txt --init-from RUN`` (lm/finetune.py): the weights exactly the model's, the
vocabulary grown for what the new text adds (their rows a fresh model's), the model settings kept,
a fresh optimiser and position, and where the run started recorded and shown."""
import json

import numpy as np
import pytest
from cli_helpers import invoke, one_red_line

from charlm.config import ModelConfig, TrainConfig, replace
from charlm.lm.checkpoint import load_checkpoint
from charlm.lm.finetune import start_from
from charlm.lm.model import Model

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py
SMALL = ("--hidden", "12", "--embed", "6", "--layers", "2", "--seq-len", "8", "--batch-size", "4")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    (tmp / "old.txt").write_text("abc cab bca\n" * 200)
    (tmp / "new.txt").write_text("zebra cab xyz\n" * 200)
    for cell in ("lstm", "jordan"):
        r = invoke("train", tmp / "old.txt", "--cell", cell, "--steps", "6", *SMALL, "--run-dir", tmp / cell)
        assert r.exit_code == 0, r.output
    return tmp


@pytest.mark.parametrize("cell", ["lstm", "jordan"])
def test_weights_come_from_the_model_and_new_rows_from_a_fresh_one(texts, cell):
    source = load_checkpoint(texts / cell)
    tcfg = TrainConfig(steps=3, seed=77)
    trainer = start_from(texts / cell, [texts / "new.txt"], ModelConfig(), tcfg, given=frozenset({"steps", "seed"}),
                         run_dir=texts / f"ft-{cell}")
    try:
        tok, old = trainer.corpus.tokenizer, source.tokenizer
        added = [t for t in tok.tokens if t not in old.tokens]
        assert tok.tokens == old.tokens + added and set(added) == set("zerxy")
        assert trainer.task.init_from["added_tokens"] == added
        model = trainer.task.model
        assert replace(model.config, vocab_size=source.config.vocab_size) == source.config
        fresh = Model(model.config).init_weights(np.random.default_rng(77))
        V = len(old)
        for name, _ in model.shapes:
            have, was = model.params[name], source.tensors[name]
            np.testing.assert_array_equal(have[tuple(slice(0, d) for d in was.shape)], was)   # exactly
            grown = [ax for ax, (a, b) in enumerate(zip(have.shape, was.shape)) if a != b]
            for ax in grown:   # the new rows (columns, for Jordan's W_yh): a fresh model's
                rows = (slice(None),) * ax + (slice(V, None),)
                np.testing.assert_array_equal(have[rows], fresh.params[name][rows])
        arrays, scalars = trainer.task.optimizer.state_dict()
        assert trainer.pos.step == 0 and scalars["t"] == 0 and not any(np.any(a) for a in arrays.values())
    finally:
        trainer.run_lock.release()


def test_cli_records_where_it_started_and_info_shows_it(texts):
    r = invoke("train", texts / "new.txt", "--init-from", texts / "lstm", "--steps", "3", "--seq-len", "8",
               "--batch-size", "4", "--run-dir", texts / "ft")
    assert r.exit_code == 0, r.output
    assert "starting from" in r.stderr and "token(s) added: " in r.stderr and "'z'" in r.stderr
    meta = load_checkpoint(texts / "ft").metadata
    source = load_checkpoint(texts / "lstm").metadata
    assert meta["init_from"]["path"] == str((texts / "lstm" / "model.safetensors").resolve())
    assert meta["init_from"]["fingerprint"] == source["fingerprint"] and meta["init_from"]["step"] == source["step"]
    assert meta["step"] == 3   # a fresh position
    info = invoke("info", texts / "ft")
    assert info.exit_code == 0 and "started from" in info.output and "token(s) added" in info.output
    assert json.loads(invoke("info", texts / "ft", "--json").output)["init_from"]["added_tokens"]
    again = invoke("train", "--resume", texts / "ft", "--steps", "4")   # a resume keeps the record
    assert again.exit_code == 0, again.output
    assert load_checkpoint(texts / "ft" / "last.safetensors").metadata["init_from"] == meta["init_from"]


def test_changed_model_settings_and_level_are_refused(texts):
    line = one_red_line(invoke("train", texts / "new.txt", "--init-from", texts / "lstm", "--hidden", "20",
                               "--steps", "2", "--run-dir", texts / "no1"))
    assert "--hidden 20" in line and "12" in line
    line = one_red_line(invoke("train", texts / "new.txt", "--init-from", texts / "lstm", "--level", "word",
                               "--steps", "2", "--run-dir", texts / "no2"))
    assert "--level word" in line
    same = invoke("train", texts / "new.txt", "--init-from", texts / "lstm", "--hidden", "12", "--steps", "2",
                  "--seq-len", "8", "--batch-size", "4", "--run-dir", texts / "yes")
    assert same.exit_code == 0, same.output
    regularised = invoke("train", texts / "new.txt", "--init-from", texts / "lstm", "--dropout", "0.3", "--steps", "2",
                         "--seq-len", "8", "--batch-size", "4", "--run-dir", texts / "drop")
    assert regularised.exit_code == 0, regularised.output   # dropout is not the model's shape
    assert load_checkpoint(texts / "drop").config.dropout == 0.3
    r = invoke("train", "--resume", texts / "lstm", "--init-from", texts / "lstm")
    assert r.exit_code == 2 and "choose one" in r.output
