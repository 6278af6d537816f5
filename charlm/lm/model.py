"""The language model: embedding -> L recurrent layers -> linear decoder -> softmax.

Parameters carry PyTorch's names, shapes and gate order (``encoder.weight``,
``rnn.weight_ih_l0``, ..., ``decoder.weight``), so a saved model loads into
``nn.Embedding`` + ``nn.LSTM/GRU/RNN`` + ``nn.Linear`` with ``load_state_dict(strict=True)``.
All parameters are views into one flat buffer and all gradients into another, so the
optimiser and clipping work on a single array.

Dimensions: T steps, B streams, V vocabulary, E embedding, H hidden, G gates, S states, L layers.
State is an array (L, S, B, H): S = 2 (h, c) for LSTM, 1 (h) for GRU and RNN.

What the cell is comes from its row of the cell table (kernels/cells.py). The stack that runs it
is layers.py for cells that feed back their own hidden state (one kernel call per layer), or
output_fed.py for a cell whose recurrence runs through the decoder (its kernel file runs the whole
stack). Arrays that live from step to step come from a per-model workspace (workspace.py), so a
step does not page-fault hundreds of MB in; the public ``forward``/``backward`` allocate fresh.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import ModelConfig
from .layers import LayerStack
from .output_fed import OutputFedStack
from .workspace import Scratch, Workspace


def parameter_shapes(config: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes in PyTorch's state_dict order (decoder.weight omitted when tied)."""
    V, E, H, G = config.vocab_size, config.embed, config.hidden, config.gates
    row = config.row
    rec, R = row.recurrent, (V if row.feeds_output else H)  # what the recurrence reads: h_{t-1} or p_{t-1}
    shapes = [("encoder.weight", (V, E))]
    for layer in range(config.layers):
        inp = E if layer == 0 else H
        shapes += [(f"rnn.weight_ih_l{layer}", (G * H, inp)), (f"rnn.weight_{rec}_l{layer}", (G * H, R)),
                   (f"rnn.bias_ih_l{layer}", (G * H,)), (f"rnn.bias_{rec}_l{layer}", (G * H,))]
    if not config.tie_weights:
        shapes.append(("decoder.weight", (V, H)))
    shapes.append(("decoder.bias", (V,)))
    if config.labels:  # a labelled model: each label's vector (layers.py; lm/labels.py)
        shapes.append(("label_embedding.weight", (config.labels, label_width(config))))
    return shapes


def label_width(config: ModelConfig) -> int:
    """A label vector's width: G*H added to layer 0's gate pre-activations (the label is an input),
    or L*S*H, every layer's initial state (the label is the state)."""
    c = config
    return c.gates * c.hidden if c.condition == "input" else c.layers * c.states * c.hidden


def _views(flat: np.ndarray, shapes) -> dict[str, np.ndarray]:
    views, offset = {}, 0
    for name, shape in shapes:
        size = math.prod(shape)
        views[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return views


class Model:
    """Parameters, forward and backward over a chunk of T steps. Never prints, never reads files."""

    def __init__(self, config: ModelConfig, dtype=np.float32):
        self.config = config.validate()
        self.dtype = np.dtype(dtype)
        self.shapes = parameter_shapes(config)
        self.size = sum(math.prod(s) for _, s in self.shapes)
        self.flat = np.zeros(self.size, dtype=self.dtype)
        self.grad_flat = np.zeros(self.size, dtype=self.dtype)
        self.params = _views(self.flat, self.shapes)
        self.grads = _views(self.grad_flat, self.shapes)
        if config.tie_weights:  # one array under two names, as PyTorch's tied modules do
            self.params["decoder.weight"] = self.params["encoder.weight"]
            self.grads["decoder.weight"] = self.grads["encoder.weight"]
        self.stack = (OutputFedStack if self.cell.feeds_output else LayerStack)(self)

    @property
    def cell(self):
        """This model's row of the cell table (kernels.cells.Cell). Numba is imported by the
        kernels it names, not when a model is built: sampling a short text never needs it."""
        return self.config.row

    # -- parameters -------------------------------------------------------------------------

    def init_weights(self, rng: np.random.Generator) -> "Model":
        """Initialise in place: PyTorch's defaults, U(±1/√H) for every recurrent weight and bias
        and for the decoder, N(0, 1) for the embedding (the output-fed row initialises its own
        recurrent weights: ``stack.init_recurrent``).

        Kept over orthogonal recurrent blocks and a forget-gate bias of 1 because they trained
        better here, not by habit (the comparison: docs/results.md, "Initialisation").
        """
        c, p = self.config, self.params
        H, G, rec = c.hidden, c.gates, self.cell.recurrent
        bound = 1.0 / math.sqrt(H)
        p["encoder.weight"][...] = rng.standard_normal(p["encoder.weight"].shape)
        if c.tie_weights:  # a shared matrix must suit the decoder too: keep logits O(1)
            p["encoder.weight"][...] = rng.uniform(-bound, bound, p["encoder.weight"].shape)
        for layer in range(c.layers):
            w_ih = p[f"rnn.weight_ih_l{layer}"]
            w_ih[...] = rng.uniform(-bound, bound, w_ih.shape)
            self.stack.init_recurrent(p[f"rnn.weight_{rec}_l{layer}"], rng)
            p[f"rnn.bias_ih_l{layer}"][...] = rng.uniform(-bound, bound, G * H)
            p[f"rnn.bias_{rec}_l{layer}"][...] = rng.uniform(-bound, bound, G * H)
        if not c.tie_weights:
            p["decoder.weight"][...] = rng.uniform(-bound, bound, p["decoder.weight"].shape)
        p["decoder.bias"][...] = rng.uniform(-bound, bound, c.vocab_size)
        if c.labels:  # drawn last: an unlabelled model's initialisation is unchanged
            p["label_embedding.weight"][...] = rng.uniform(-bound, bound, p["label_embedding.weight"].shape)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """PyTorch-named arrays (both names present when tied, as PyTorch saves them)."""
        return {name: self.params[name] for name, _ in self.shapes} | (
            {"decoder.weight": self.params["encoder.weight"]} if self.config.tie_weights else {})

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy arrays in; names and shapes must match exactly (checked by the caller first)."""
        for name, _ in self.shapes:
            self.params[name][...] = tensors[name]

    @property
    def num_parameters(self) -> int:
        return self.size

    def init_state(self, batch: int) -> np.ndarray:
        c = self.config
        return np.zeros((c.layers, c.states, batch, c.hidden), dtype=self.dtype)

    # -- forward / backward -----------------------------------------------------------------

    def forward(self, x, state, *, train=False, rng=None):
        """Run the network over a chunk.

        x      (T, B) int token ids
        state  (L, S, B, H) initial state (not modified)
        Returns (logits (T*B, V), new_state (L, S, B, H), cache for backward).
        """
        return self.stack.forward(x, state, train, rng, Scratch())

    def backward(self, dlogits, cache) -> None:
        """Write every gradient into ``grad_flat`` from dL/dlogits (T*B, V)."""
        self.stack.backward(np.ascontiguousarray(dlogits), cache, Scratch(), None)

    def loss_and_grad(self, x, y, state, rng=None, labels=None):
        """Mean NLL per token over the chunk, gradients in ``grad_flat``, and the carried state.

        ``labels`` (B,): each stream is one labelled line (data/labelled.line_batch), read from
        ``state`` = ``line_state(labels)``; the targets -1 past a line's end carry no loss."""
        from ..kernels.loss import cross_entropy_grad_par
        from ..runtime import kernel_threads

        ws = self._workspace("train")
        logits, new_state, cache = self.stack.forward(x, state, True, rng, ws, labels)
        n = logits.shape[0]
        targets = ws.get("targets", (n,), np.int64)
        targets[...] = y.reshape(-1)
        db_dec = ws.get("db_dec", (self.config.vocab_size,), self.dtype)
        if labels is None:
            loss_sum = cross_entropy_grad_par(logits, targets, 1.0 / n, db_dec, kernel_threads())
        else:
            loss_sum, n = masked_loss(logits, targets, db_dec)
        self.stack.backward(logits, cache, ws, db_dec)
        return loss_sum / n, new_state

    def line_state(self, labels) -> np.ndarray:
        """(L, S, B, H): where lines with these labels start, the zero state or (when the label is
        the state) each label's vector."""
        c, labels = self.config, np.asarray(labels, np.int64)
        if c.condition != "state" or not c.labels:
            return self.init_state(len(labels))
        rows = self.params["label_embedding.weight"][labels]
        return np.ascontiguousarray(rows.reshape(len(labels), c.layers, c.states, c.hidden).transpose(1, 2, 0, 3))

    def token_nll(self, x, y, state):
        """Per-token NLL in nats (T*B,) float64 and the carried state; no gradients, no dropout."""
        from ..kernels.loss import cross_entropy_rows_par
        from ..runtime import kernel_threads

        ws = self._workspace("eval")
        logits, new_state, _ = self.stack.forward(x, state, False, None, ws)
        nll = np.empty(logits.shape[0], dtype=np.float64)
        cross_entropy_rows_par(logits, np.ascontiguousarray(y.reshape(-1), dtype=np.int64), nll,
                               kernel_threads())
        return nll, new_state

    def state_grads(self, dlogits, cache) -> np.ndarray:
        """(L, T, B, H) float64: dL/dh^l_s for every layer l and step s of a ``forward`` (without
        dropout) whose loss has gradient ``dlogits`` (T*B, V): the part from above at s plus what
        the recurrence sends back from s+1 (inspection of gradient flow)."""
        return self.stack.state_grads(dlogits, cache)

    def recurrent_matrices(self) -> list[tuple[int, str, np.ndarray]]:
        """(layer, block, matrix) for the matrices that carry a layer's past into its next step:
        W_hh whole and per gate block, or for a cell that feeds back its output, W_yh @ W_dec."""
        return self.stack.recurrent_matrices()

    def _workspace(self, kind):
        """Arrays reused from step to step (one set per kind: "train", "eval"), so a step does not
        page-fault hundreds of MB of fresh memory in."""
        if not hasattr(self, "_ws"):
            self._ws = {}
        return self._ws.setdefault(kind, Workspace())


def masked_loss(logits, targets, db_dec):
    """The loss kernel over the rows whose target is >= 0 only: (sum of their NLL, their count);
    ``logits`` becomes dL/dlogits of their mean (0 on the other rows), ``db_dec`` its column sums."""
    from ..kernels.loss import cross_entropy_grad_par
    from ..runtime import kernel_threads

    rows = np.flatnonzero(targets >= 0)
    part = np.ascontiguousarray(logits[rows])
    loss_sum = cross_entropy_grad_par(part, targets[rows], 1.0 / max(len(rows), 1), db_dec, kernel_threads())
    logits[...] = 0
    logits[rows] = part
    return loss_sum, max(len(rows), 1)
