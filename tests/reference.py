"""Naive per-gate reference cells in float64: plain NumPy, one step and one gate at a time.

Written straight from the PyTorch docs (torch.nn.LSTM / GRU / RNN), independently of the kernels:
no fused passes, no cached activations, exact tanh/sigmoid. Shapes as in the kernels: xp (T, B, G*H)
already holds x @ W_ih^T + b_ih; W_hh (G*H, H); b_hh (G*H,); s0 (S, B, H).
Each returns (hs, sT) with hs (T+1, B, H), hs[0] = h0, and sT (S, B, H).
"""
import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_reference(xp, W_hh, b_hh, s0):
    T, B, _ = xp.shape
    H = W_hh.shape[1]
    W_hi, W_hf, W_hg, W_ho = (W_hh[k * H:(k + 1) * H] for k in range(4))
    b_hi, b_hf, b_hg, b_ho = (b_hh[k * H:(k + 1) * H] for k in range(4))
    h, c = s0[0].astype(np.float64), s0[1].astype(np.float64)
    hs = [h]
    for t in range(T):
        x_i, x_f, x_g, x_o = (xp[t, :, k * H:(k + 1) * H] for k in range(4))
        i = sigmoid(x_i + h @ W_hi.T + b_hi)
        f = sigmoid(x_f + h @ W_hf.T + b_hf)
        g = np.tanh(x_g + h @ W_hg.T + b_hg)
        o = sigmoid(x_o + h @ W_ho.T + b_ho)
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs), np.stack([h, c])


def gru_reference(xp, W_hh, b_hh, s0):
    T, B, _ = xp.shape
    H = W_hh.shape[1]
    W_hr, W_hz, W_hn = (W_hh[k * H:(k + 1) * H] for k in range(3))
    b_hr, b_hz, b_hn = (b_hh[k * H:(k + 1) * H] for k in range(3))
    h = s0[0].astype(np.float64)
    hs = [h]
    for t in range(T):
        x_r, x_z, x_n = (xp[t, :, k * H:(k + 1) * H] for k in range(3))
        r = sigmoid(x_r + h @ W_hr.T + b_hr)
        z = sigmoid(x_z + h @ W_hz.T + b_hz)
        n = np.tanh(x_n + r * (h @ W_hn.T + b_hn))
        h = (1.0 - z) * n + z * h
        hs.append(h)
    return np.stack(hs), h[None]


def rnn_reference(xp, W_hh, b_hh, s0):
    T = xp.shape[0]
    h = s0[0].astype(np.float64)
    hs = [h]
    for t in range(T):
        h = np.tanh(xp[t] + h @ W_hh.T + b_hh)
        hs.append(h)
    return np.stack(hs), h[None]


REFERENCES = {"lstm": lstm_reference, "gru": gru_reference, "rnn": rnn_reference}


def step_reference(cell, xp_row, W_hh, b_hh, state):
    """One step for one sequence: xp_row (G*H,), state (S, H) -> new state (S, H)."""
    _, sT = REFERENCES[cell](xp_row[None, None], W_hh, b_hh, state[:, None])
    return sT[:, 0]
