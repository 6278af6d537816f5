"""Encoder-decoder with attention: a bidirectional encoder on the layer kernels, an input-feeding decoder.

model.py holds the configuration, the parameters (under the names of an equivalent ``torch.nn``
module) and one batch's loss and gradient; decoder.py the decoder's compiled time loops;
attention.py the attention they call; decode.py the states that greedy and beam search drive.
config.py declares the settings, data.py reads the data, task.py/runs.py/store.py train on the
shared loop, metrics.py and predict.py score and decode. The CLI imports only config.py at start:
the kernels load Numba.
"""
