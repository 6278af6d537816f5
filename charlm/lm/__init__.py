"""The language model: its layers and model, training, checkpoints, sampling, evaluation and the model a budget buys."""
