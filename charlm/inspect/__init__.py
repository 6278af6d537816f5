"""See inside a network: gradient flow through time, long-range memory, and single units.

    from charlm.inspect import gradients, memory, neurons
    report = gradients.measure(model, ids, max_lag=50)          # lag curves + W_hh spectra
    reports = gradients.compare(model.config, ids)              # fresh RNN, GRU, LSTM of that size
    result = memory.run_memory_experiment()                     # accuracy vs distance per cell
    view = neurons.inspect_neurons(checkpoint, ["text.txt"])    # units ranked by text properties

Library functions return arrays and dataclasses and never print; ``charlm inspect`` renders them.
Each module imports NumPy only at import time; models (and Numba) load when they are used.
"""
from . import gradients, memory, neurons

__all__ = ["gradients", "memory", "neurons"]
