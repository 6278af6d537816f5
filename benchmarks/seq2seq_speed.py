"""Training steps per second of the encoder-decoder against the PyTorch anchor at the same shapes, as interleaved pairs.

    python benchmarks/seq2seq_speed.py g2p-train.tsv --torch-script torch_g2p.py [--rounds 5 --steps 40]
        [--threads 2] [--batch-size 64 --embed 64 --hidden 256 --attention general --dropout 0.2] [--phases]

Both train the same batches (charlm's bucketed epoch order) with Adam and a global-norm clip: a
bidirectional LSTM encoder, a bridge, an input-feeding LSTM decoder with attention, the output
softmax. Each round runs ``--steps`` charlm steps, then as many PyTorch steps, so both see the same
load; the per-round ratio is the figure (on a busy machine it is indicative only; charlm's
processor time per step, also given, depends less on what else runs). ``--phases``
adds charlm's time per phase of a step (cumulative, from the profiler). Prints JSON lines.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import pstats
import time

import numpy as np

# (label, file, function): a phase is the cumulative time of that function
PHASES = (("batching", "seq2seq/task.py", "_batch"), ("forward (all)", "seq2seq/training_pass.py", "run_pass"),
          ("encoder forward", "seq2seq/model.py", "encode_batch"), ("attention keys", "seq2seq/model.py", "attended"),
          ("decoder forward loop", "seq2seq/decoder.py", "forward_rows"),
          ("loss (softmax)", "seq2seq/training_pass.py", "loss"),
          ("backward (all)", "seq2seq/training_pass.py", "backward"),
          ("decoder backward loop", "seq2seq/decoder.py", "backward_rows"),
          ("keys backward", "seq2seq/model.py", "attended_backward"),
          ("encoder backward", "seq2seq/model.py", "encoder_backward"),
          ("split products A^T B", "seq2seq/products.py", "t_times"), ("split products AB", "seq2seq/products.py", "times"),
          ("clip", "seq2seq/task.py", "clip"),
          ("Adam", "seq2seq/task.py", "step"))


def charlm_task(path, args):
    from charlm.seq2seq.config import make_configs
    from charlm.seq2seq.data import read_pairs
    from charlm.seq2seq.task import Seq2SeqTask

    values = {"batch_size": args.batch_size, "embed": args.embed, "hidden": args.hidden, "attention": args.attention,
              "dropout": args.dropout, "threads": args.threads, "lr": args.lr, "clip_norm": 1.0}
    model_config, train_config = make_configs(values)
    pairs = read_pairs(path, "char", "word")
    task = Seq2SeqTask(pairs, pairs[:10], model_config, train_config, levels={"source": "char", "target": "word"})
    task.init_weights()
    return task


def charlm_steps(task, n: int, cpu: list | None = None) -> float:
    """Seconds of n steps; their processor seconds (all threads) appended to ``cpu`` when given."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        task.loss_and_grad(task.next_batch())
        task.clip()
        task.step(task.tcfg.lr)
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return time.perf_counter() - t0


class TorchSide:
    """torch_g2p.py's model and optimiser, fed charlm's batches (the same ids: padding 0 in both)."""

    def __init__(self, script, task, args):
        import torch

        spec = importlib.util.spec_from_file_location("torch_g2p", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.set_num_threads(args.threads or 2)
        torch.manual_seed(0)
        c = task.mcfg
        self.torch, self.task = torch, task
        self.model = module.G2P(c.src_vocab, c.tgt_vocab, args.embed, args.hidden, 1, args.dropout)
        self.model.train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr)

    def steps(self, n: int) -> float:
        torch, task = self.torch, self.task
        t0 = time.perf_counter()
        for _ in range(n):
            src, src_len, tgt_in, tgt_out, _ = task.next_batch()
            tgt = np.concatenate([tgt_in[:1], tgt_out]).T
            loss = self.model.loss(torch.from_numpy(np.ascontiguousarray(src.T)), torch.from_numpy(src_len),
                                   torch.from_numpy(np.ascontiguousarray(tgt)))
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
        return time.perf_counter() - t0


def phases(task, n: int) -> dict:
    """Milliseconds per step in each phase (cumulative times of the profiled functions)."""
    profile = cProfile.Profile()
    profile.enable()
    total = charlm_steps(task, n)
    profile.disable()
    found = {}
    for (path, _, name), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():
        key = ("/".join(path.replace("\\", "/").split("/")[-2:]), name)
        found[key] = found.get(key, 0.0) + cumulative
    return {"step": round(1000 * total / n, 2)} | {label: round(1000 * found.get((where, name), 0.0) / n, 2)
                                                    for label, where, name in PHASES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train", help="source<TAB>target training file (characters in, words out)")
    ap.add_argument("--torch-script", help="torch_g2p.py (without it: charlm only)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="steps per side per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--attention", default="general")
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--phases", action="store_true", help="charlm's milliseconds per phase of a step")
    a = ap.parse_args()
    from charlm.seqtask.model import kernel_scope

    task = charlm_task(a.train, a)
    side = TorchSide(a.torch_script, task, a) if a.torch_script else None
    with kernel_scope(a.threads):   # charlm's thread limits hold around its own steps only
        task.warm_up()
        charlm_steps(task, 3)
    if side is not None:
        side.steps(3)
    for r in range(a.rounds):
        cpu: list = []
        with kernel_scope(a.threads):
            ours = a.steps / charlm_steps(task, a.steps, cpu)
        record = {"round": r, "charlm_steps_per_s": round(ours, 2),
                  "charlm_cpu_ms_per_step": round(1000 * cpu[0] / a.steps, 1)}
        if side is not None:
            theirs = a.steps / side.steps(a.steps)
            record |= {"torch_steps_per_s": round(theirs, 2), "ratio": round(ours / theirs, 3)}
        print(json.dumps(record), flush=True)
    if a.phases:
        with kernel_scope(a.threads):
            print(json.dumps({"ms_per_step": phases(task, a.steps)}), flush=True)


if __name__ == "__main__":
    main()
