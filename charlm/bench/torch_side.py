"""The same models in PyTorch, measured as charlm's are: what ``charlm bench --compare torch`` runs beside charlm.

Run as ``python -m charlm.bench.torch_side '<BenchConfig as JSON>'`` in a fresh interpreter (its
own peak RSS); prints one JSON line with the field names of charlm's side (speed.py, seq_speed.py).

Language model: nn.Embedding(V, E) -> nn.LSTM / nn.GRU / nn.RNN(tanh)(E, H, num_layers=L) ->
nn.Linear(H, V), time-major: charlm's model parameter for parameter (E defaults to V, as there).
A training step is forward, mean cross-entropy, backward, clip_grad_norm_(5.0) and Adam on B
streams of random tokens, the state carried (detached) from step to step; throughput is B*T over
the median step time after the warm-up steps. Sampling: batch 1, softmax at the temperature and
torch.multinomial per character under inference_mode, measured with oneDNN on and off (at batch 1
the two differ a lot; compare.py takes the faster).

Sequence tasks: nn.Embedding(V, E) -> the cell with ``bidirectional=True`` over
``pack_padded_sequence`` (no step of padding computed, as in charlm) -> nn.Linear(2H, C) on the two
directions' final states (classify) or on every valid step (tag), mean cross-entropy over the valid
targets, then the same clipping and Adam, on seq_speed.seq_batches (the batches charlm trains on).
"""
from __future__ import annotations

import json
import statistics
import sys
import time

T0 = time.perf_counter()
import torch  # (after T0: the import is part of what is measured, as charlm's is)
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .host import peak_rss_mb
from .seq_speed import seq_config_record, seq_flops_per_token, timed_steps
from .speed import BenchConfig, flops_per_char

IMPORT_S = time.perf_counter() - T0
MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _rnn(cfg, input_size: int, bidirectional: bool):
    extra = {"nonlinearity": "tanh"} if cfg.cell == "rnn" else {}
    return MODULES[cfg.cell](input_size, cfg.hidden, num_layers=cfg.layers, bidirectional=bidirectional, **extra)


class LanguageModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = nn.Embedding(cfg.vocab, cfg.embed_dim)
        self.rnn = _rnn(cfg, cfg.embed_dim, False)
        self.decoder = nn.Linear(cfg.hidden, cfg.vocab)

    def forward(self, x, state):
        out, state = self.rnn(self.encoder(x), state)
        return self.decoder(out), state


class SequenceModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.task = cfg.task
        self.embedding = nn.Embedding(cfg.vocab, cfg.embed_dim)
        self.rnn = _rnn(cfg, cfg.embed_dim, True)
        self.head = nn.Linear(2 * cfg.hidden, cfg.labels)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.embedding(ids), lengths, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.task == "classify":
            h_n = state[0] if isinstance(state, tuple) else state   # (L*2, B, H)
            return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1))  # the top layer's two final states
        padded, _ = pad_packed_sequence(out)                         # (T, B, 2H), 0 past each length
        return self.head(padded)


def _zero_state(cfg, batch: int):
    z = torch.zeros(cfg.layers, batch, cfg.hidden)
    return (z, z.clone()) if cfg.cell == "lstm" else z


def _detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _update(model, opt, loss, clip: float) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


def train_lm(cfg, model) -> dict:
    import numpy as np

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = cfg.warmup + cfg.steps
    rng = np.random.default_rng(cfg.seed)
    streams = torch.from_numpy(rng.integers(0, cfg.vocab, (cfg.batch, n * cfg.seq_len + 1)))  # (B, n*T + 1)
    state, times, losses = _zero_state(cfg, cfg.batch), [], []
    for k in range(n):
        window = streams[:, k * cfg.seq_len:(k + 1) * cfg.seq_len + 1].t()  # (T + 1, B)
        x, y = window[:-1].contiguous(), window[1:].contiguous()
        t0 = time.perf_counter()
        logits, state = model(x, _detach(state))
        loss = nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), y.reshape(-1))
        losses.append(_update(model, opt, loss, cfg.clip))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[cfg.warmup:])
    chars = cfg.batch * cfg.seq_len
    gflops = chars / med * 3 * flops_per_char(cfg.cell, cfg.layers, cfg.hidden, cfg.vocab, cfg.embed_dim) / 1e9
    return {"chars_per_s": chars / med, "step_s_median": med, "chars_per_step": chars, "first_step_s": times[0],
            "loss_first": losses[0], "loss_last": losses[-1], "gflops_achieved": round(gflops, 2),
            "fraction_of_peak": round(gflops / cfg.peak_gflops, 4) if cfg.peak_gflops else None}


@torch.inference_mode()
def sample_lm(cfg, model) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed)
    rates = []
    for rep in range(cfg.sample_reps + 1):  # the first run warms up
        n = cfg.sample_chars if rep else min(cfg.sample_chars, 200)
        state, token = _zero_state(cfg, 1), torch.zeros(1, 1, dtype=torch.long)
        t0 = time.perf_counter()
        for _ in range(n):
            logits, state = model(token, state)
            probs = torch.softmax(logits.view(1, -1) / cfg.temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=gen).view(1, 1)
        if rep:
            rates.append(n / (time.perf_counter() - t0))
    return {"chars_per_s": statistics.median(rates), "chars_per_s_runs": [round(r, 1) for r in rates],
            "mkldnn": torch.backends.mkldnn.enabled}


def measure_lm(cfg) -> dict:
    model = LanguageModel(cfg)
    res = {"train": train_lm(cfg, model)} if cfg.train else {}
    if cfg.sample:
        model.eval()
        res["sample"] = sample_lm(cfg, model)
        if torch.backends.mkldnn.enabled:
            torch.backends.mkldnn.enabled = False
            try:
                res["sample_mkldnn_off"] = sample_lm(cfg, model)
            finally:
                torch.backends.mkldnn.enabled = True
    fwd = flops_per_char(cfg.cell, cfg.layers, cfg.hidden, cfg.vocab, cfg.embed_dim)
    return res | {"params": sum(p.numel() for p in model.parameters()), "flops_per_char_fwd": fwd}


def measure_seq(cfg) -> dict:
    model = SequenceModel(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def step(batch):
        ids, lengths, labels = (torch.from_numpy(a) for a in batch)
        logits = model(ids, lengths)
        if cfg.task == "classify":
            loss = nn.functional.cross_entropy(logits, labels)
        else:
            T = logits.shape[0]
            valid = torch.arange(T)[:, None] < lengths[None, :]
            loss = nn.functional.cross_entropy(logits.reshape(-1, cfg.labels),
                                               torch.where(valid, labels, -100).reshape(-1), ignore_index=-100)
        return _update(model, opt, loss, cfg.clip)

    return {"train": timed_steps(cfg, step), "params": sum(p.numel() for p in model.parameters()),
            "flops_per_char_fwd": seq_flops_per_token(cfg), "config": seq_config_record(cfg)}


def measure(cfg: BenchConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    res = measure_lm(cfg) if cfg.task == "lm" else measure_seq(cfg)
    env = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads()}
    return {"bench": "torch", "task": cfg.task, "env": env, "import_s": round(IMPORT_S, 3)} | res | {
        "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    print(json.dumps(measure(BenchConfig(**json.loads(sys.argv[1])))), flush=True)
