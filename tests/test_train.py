"""Training end to end: a tiny corpus is learned, and a stopped-and-resumed run matches an unbroken one."""
import math

import numpy as np
import pytest

from charlm.config import ModelConfig, TrainConfig
from charlm.data.corpus import build_corpus
from charlm.lm import checkpoint as ckpt
from charlm.lm.sample import SampleOptions, Sampler
from charlm.lm.train import DoneEvent, EvalEvent, StepEvent, Trainer

TINY = "the quick brown fox jumps over the lazy dog\n" * 40


def write(tmp_path, text, name="corpus.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(trainer):
    events = list(trainer.events())
    assert isinstance(events[-1], DoneEvent)
    return events


def step_losses(events):
    return [e.loss for e in events if isinstance(e, StepEvent)]


def test_tiny_corpus_is_learned_to_near_zero_loss(tmp_path):
    corpus = build_corpus([write(tmp_path, TINY)], eos="none", val_fraction=0.0)
    trainer = Trainer(corpus, ModelConfig(cell="lstm", embed=16, hidden=64, layers=1),
                      TrainConfig(steps=150, seq_len=32, batch_size=4, lr=1e-2, eval_every=50), tmp_path / "run")
    events = run(trainer)
    losses = step_losses(events)
    assert losses[0] > 2.5
    assert np.mean(losses[-10:]) < 0.1
    # the best model is on disk, self-contained, and greedy sampling reproduces the memorised text
    loaded = ckpt.load_checkpoint(tmp_path / "run")
    text = "".join(Sampler.from_checkpoint(loaded).stream("the quick", SampleOptions(temperature=0, max_length=30)))
    assert text.startswith("the quick brown fox jumps over")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_stop_and_resume_reproduces_uninterrupted_losses(tmp_path, cell):
    text = "".join(f"line {i % 17} of {cell} text, with state carried\n" for i in range(300))
    path = write(tmp_path, text)

    def builder(tokenizer, tcfg, sources):
        return build_corpus(sources, level=tcfg.level, eos=tcfg.eos, val_fraction=tcfg.val_fraction,
                            tokenizer=tokenizer)

    mcfg = ModelConfig(cell=cell, embed=8, hidden=16, layers=2, dropout=0.1)
    tcfg = TrainConfig(steps=24, seq_len=16, batch_size=4, eval_every=8, lr=3e-3, schedule="cosine",
                       warmup_steps=3)
    corpus = build_corpus([path], val_fraction=0.1)
    full = step_losses(run(Trainer(corpus, mcfg, tcfg, tmp_path / "full")))

    first = Trainer(corpus, mcfg, tcfg, tmp_path / "split")
    part = []
    for event in first.events():
        if isinstance(event, StepEvent):
            part.append(event.loss)
            if event.step == 13:  # mid-way between checkpoints: stop requested like Ctrl-C
                first.request_stop()
    assert len(part) == 13
    resumed = Trainer.resume(tmp_path / "split", builder)
    assert resumed.pos.step == 13
    rest = step_losses(run(resumed))
    np.testing.assert_array_equal(np.array(part + rest), np.array(full))


def test_eval_reports_bits_per_char_and_perplexity(tmp_path):
    corpus = build_corpus([write(tmp_path, TINY)], eos="line", val_fraction=0.2)
    trainer = Trainer(corpus, ModelConfig(embed=8, hidden=16, layers=1),
                      TrainConfig(steps=10, seq_len=16, batch_size=2, eval_every=5), tmp_path / "run")
    evals = [e for e in run(trainer) if isinstance(e, EvalEvent)]
    assert [e.step for e in evals] == [5, 10]
    for e in evals:
        assert e.scores["val_bpc"] == pytest.approx(e.scores["val_loss"] / math.log(2))
        assert e.scores["val_ppl"] == pytest.approx(math.exp(e.scores["val_loss"]))
    metrics = ckpt.read_metrics(tmp_path / "run")
    assert sum(1 for r in metrics if r["kind"] == "step") == 10


def test_checkpoint_loads_into_pytorch_with_same_validation_loss(tmp_path):
    torch = pytest.importorskip("torch")
    corpus = build_corpus([write(tmp_path, TINY)], eos="none", val_fraction=0.2)
    trainer = Trainer(corpus, ModelConfig(cell="gru", embed=8, hidden=16, layers=2),
                      TrainConfig(steps=10, seq_len=16, batch_size=2, eval_every=10, dtype="float32"),
                      tmp_path / "run")
    evals = [e for e in run(trainer) if isinstance(e, EvalEvent)]

    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "run" / ckpt.MODEL_FILE))
    nn = torch.nn
    encoder, rnn, decoder = nn.Embedding(len(corpus.tokenizer), 8), nn.GRU(8, 16, num_layers=2), nn.Linear(16, len(corpus.tokenizer))
    module = nn.ModuleDict({"encoder": encoder, "rnn": rnn, "decoder": decoder})
    module.load_state_dict(state, strict=True)
    ids = torch.tensor(np.asarray(corpus.val, dtype=np.int64))
    with torch.no_grad():
        out, _ = rnn(encoder(ids[:-1].view(-1, 1)))
        loss = nn.functional.cross_entropy(decoder(out).view(-1, len(corpus.tokenizer)), ids[1:])
    assert loss.item() == pytest.approx(evals[-1].scores["val_loss"], rel=1e-4)
