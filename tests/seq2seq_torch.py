"""The encoder-decoder a PyTorch user would write, from torch.nn parts: the reference charlm's
seq2seq model is checked against (its state_dict has the same names and shapes)."""
import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

RNNS = {"lstm": (nn.LSTM, nn.LSTMCell), "gru": (nn.GRU, nn.GRUCell), "rnn": (nn.RNN, nn.RNNCell)}


class General(nn.Module):
    """score(h, e_s) = e_s . (W_a h)."""

    def __init__(self, H, F):
        super().__init__()
        self.query = nn.Linear(H, F, bias=False)

    def forward(self, h, enc):                      # h (B, H), enc (S, B, F) -> (B, S)
        return torch.einsum("sbf,bf->bs", enc, self.query(h))


class Additive(nn.Module):
    """score(h, e_s) = v . tanh(W_1 e_s + W_2 h)."""

    def __init__(self, H, F):
        super().__init__()
        self.key = nn.Linear(F, H, bias=False)
        self.query = nn.Linear(H, H, bias=False)
        self.v = nn.Linear(H, 1, bias=False)

    def forward(self, h, enc):
        return self.v(torch.tanh(self.key(enc) + self.query(h)[None])).squeeze(-1).T


class TorchSeq2Seq(nn.Module):
    def __init__(self, c):
        super().__init__()
        rnn, cell = RNNS[c.cell]
        H, F, E = c.hidden, c.width, c.embed
        self.lstm = c.cell == "lstm"
        self.src_embedding = nn.Embedding(c.src_vocab, E)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab, E)
        self.encoder = rnn(E, H, num_layers=c.layers, bidirectional=c.bidirectional, dropout=0.0)
        self.bridge_h = nn.Linear(F, H)
        if self.lstm:
            self.bridge_c = nn.Linear(F, H)
        self.decoder = cell(E + H, H)
        # no attention: the decoder sees only the encoder's final vector, as the context of every step
        self.attention = None if c.attention == "none" else (General if c.attention == "general" else Additive)(H, F)
        self.combine = nn.Linear(H + F, H)
        self.out = nn.Linear(H, c.tgt_vocab)
        self.D = c.directions

    def forward(self, src, src_len, tgt_in, masks=None):
        """src (S, B), tgt_in (T, B) long; masks: charlm's dropout masks in the caller's order
        (src (S, B, E), tgt (T, B, E), out (T, B, H)), applied instead of drawing. Returns
        logits (T, B, V) and attention weights (T, B, S) (computed at padded steps too)."""
        S, B = src.shape
        x = self.src_embedding(src)
        if masks is not None:
            x = x * masks["src"]
        packed, final = self.encoder(pack_padded_sequence(x, torch.as_tensor(src_len), enforce_sorted=False))
        enc, _ = pad_packed_sequence(packed, total_length=S)
        finals = final if self.lstm else (final,)
        top = [f[-self.D:].transpose(0, 1).reshape(B, -1) for f in finals]
        h = torch.tanh(self.bridge_h(top[0]))
        c = self.bridge_c(top[1]) if self.lstm else None
        valid = torch.arange(S)[None, :] < torch.as_tensor(src_len)[:, None]    # (B, S)
        if self.attention is None:
            enc, valid = top[0][None], torch.ones(B, 1, dtype=torch.bool)
        feed = torch.zeros_like(h)
        outs, alphas = [], []
        for t in range(tgt_in.shape[0]):
            e = self.tgt_embedding(tgt_in[t])
            if masks is not None:
                e = e * masks["tgt"][t]
            x = torch.cat([e, feed], 1)
            if self.lstm:
                h, c = self.decoder(x, (h, c))
            else:
                h = self.decoder(x, h)
            score = self.attention(h, enc) if self.attention is not None else torch.zeros(B, 1, dtype=h.dtype)
            alpha = torch.softmax(score.masked_fill(~valid, float("-inf")), dim=1)
            ctx = torch.einsum("bs,sbf->bf", alpha, enc)
            a = torch.tanh(self.combine(torch.cat([h, ctx], 1)))
            outs.append(a * masks["out"][t] if masks is not None else a)
            alphas.append(alpha)
            feed = a   # the next step reads the vector before dropout
        return self.out(torch.stack(outs)), torch.stack(alphas)


def torch_loss_and_grads(c, state_dict, src, src_len, tgt_in, tgt_out, tgt_len, masks=None):
    """(loss, logits, alpha, {name: grad}) of the torch module on charlm's weights (float64)."""
    module = TorchSeq2Seq(c).double()
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, strict=True)
    T = int(max(tgt_len))
    tm = None if masks is None else {k: torch.from_numpy(v) for k, v in masks.items()}
    logits, alpha = module(torch.from_numpy(np.asarray(src)[:max(src_len)]), list(src_len),
                           torch.from_numpy(np.asarray(tgt_in)[:T]), tm)
    valid = torch.arange(T)[:, None] < torch.as_tensor(tgt_len)[None, :]
    loss = nn.functional.cross_entropy(logits[valid], torch.from_numpy(np.asarray(tgt_out)[:T])[valid],
                                       label_smoothing=c.label_smoothing)
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return loss.item(), logits.detach().numpy(), alpha.detach().numpy(), grads
