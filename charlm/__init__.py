"""charlm: train, sample and evaluate character- and word-level recurrent language models.

The public API. Importing ``charlm`` is cheap: NumPy-only modules load on first use and
Numba loads only when a model is built (``charlm --help`` never pays for it).

    import charlm
    corpus = charlm.build_corpus(["names.txt"], eos="line")
    trainer = charlm.Trainer(corpus, charlm.ModelConfig(hidden=128), charlm.TrainConfig(steps=500), "runs/names")
    for event in trainer.events(): ...
    ckpt = charlm.load_checkpoint("runs/names")
    print(charlm.generate_text(ckpt, temperature=0.8, seed=1))
"""
__version__ = "0.1.0"

_EXPORTS = {
    "CharlmError": "errors", "CorpusError": "errors", "VocabError": "errors",
    "ConfigError": "errors", "CheckpointError": "errors",
    "ModelConfig": "config", "TrainConfig": "config",
    "Tokenizer": "data.tokenizer",
    "Corpus": "data.corpus", "build_corpus": "data.corpus", "read_text": "data.text_files", "StreamBatcher": "data.batches",
    "Model": "lm.model",
    "Checkpoint": "lm.checkpoint", "load_checkpoint": "lm.checkpoint", "save_checkpoint": "lm.checkpoint",
    "Trainer": "lm.train", "StepEvent": "training.events", "EvalEvent": "training.events",
    "CheckpointEvent": "training.events", "DoneEvent": "training.events",
    "Sampler": "lm.sample", "generate_text": "lm.sample",
    "evaluate": "lm.evaluate", "EvalResult": "lm.evaluate",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    """Lazy attribute access (PEP 562) so that ``import charlm`` stays instant."""
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'charlm' has no attribute {name!r}")
