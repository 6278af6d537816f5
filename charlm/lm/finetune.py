"""Fine-tuning: a new run on new text whose weights start from another run's model.

Only the weights carry over: the optimiser, its schedule and the data position start fresh, and
the model's shape is the checkpoint's (a different one given is refused; the budget does not
choose a model). Dropout is not shape: ``--dropout`` may differ from the source run's, but it is
not chosen by the budget's pressure rule as a new run's is (switching dropout on in a model trained
without it set a measured fine-tune back more than the overfitting it prevented; the measurement
is in docs/language-models.md).

The vocabulary grows rather than refusing new text: the characters or words of the new text
(after its --min-count/--max-vocab) that the old vocabulary lacks are appended after the old
ids, so every old id keeps its rows. Their rows (embedding, decoder, decoder bias, and
Jordan's output-to-hidden columns) are what a fresh model of the grown size gets from the new
run's seed (``Model.init_weights``: N(0, 1) embedding rows, U(±1/√H) decoder rows and biases); every
other weight is the checkpoint's, exactly. The run's metadata records where it started
(``init_from``: the checkpoint's path, step and training-text fingerprint, and the tokens added).
"""
from __future__ import annotations

import os
from pathlib import Path


from ..config import ModelConfig, TrainConfig, replace, to_dict
from ..data.tokenizer import Tokenizer
from ..errors import ConfigError

NOT_SHAPE = ("vocab_size", "dropout", "weight_dropout")  # model settings a fine-tune may change


def grown_tokenizer(old: Tokenizer, fitted: Tokenizer) -> tuple[Tokenizer, list[str]]:
    """``old`` with the tokens of ``fitted`` (a vocabulary of the new text) it lacks appended in
    ``fitted``'s order; and the list of those tokens."""
    known = set(old.tokens)
    added = [t for t in fitted.tokens[2:] if t not in known]
    return Tokenizer(old.level, old.tokens + added, old.split), added


def copy_weights(model, tensors: dict) -> None:
    """Each of ``tensors`` (a smaller vocabulary's) into the leading block of the model's array of
    the same name: the vocabulary is the only dimension that differs, and the old ids come first."""
    for name, _ in model.shapes:
        old = tensors[name]
        model.params[name][tuple(slice(0, d) for d in old.shape)] = old


def settle_configs(checkpoint, model_config: ModelConfig, train_config: TrainConfig, given) -> tuple:
    """The checkpoint's model settings and ``train_config`` at its level and split; a model setting
    or level given that differs from the checkpoint's is a ConfigError naming them."""
    from ..settings import spec_of

    saved = checkpoint.config
    clash = [f"{spec_of(ModelConfig, k).option} {getattr(model_config, k)!r} (the model has "
             f"{getattr(saved, k)!r})" for k in sorted(given) if k in to_dict(saved) and k not in NOT_SHAPE
             and getattr(model_config, k) != getattr(saved, k)]
    tok = checkpoint.tokenizer
    if "level" in given and train_config.level != tok.level:
        clash.append(f"--level {train_config.level} (the model is {tok.level}-level)")
    if "split" in given and tok.level == "word" and train_config.split != tok.split:
        clash.append(f"--split {train_config.split} (the model splits on {tok.split})")
    if clash:
        raise ConfigError(f"--init-from keeps the model's settings; cannot change {'; '.join(clash)}")
    kept = replace(saved, **{k: getattr(model_config, k) for k in NOT_SHAPE if k in given and k != "vocab_size"})
    return kept, replace(train_config, level=tok.level, split=tok.split or train_config.split)


def start_from(checkpoint_path, paths, model_config: ModelConfig, train_config: TrainConfig, *,
               given=frozenset(), run_dir=None, root="runs", overwrite: bool = False):
    """A ``Trainer`` for a new run on ``paths`` starting from the model at ``checkpoint_path`` (a
    run directory: its best model, or a .safetensors file). Locking and clean-up as
    ``start.start_training``."""
    from ..data.text_files import check_file
    from ..distributed import on_rank0
    from ..runs.directory import claim_new_run, make_run_dir, release_new
    from ..runs.find import run_stem
    from .checkpoint import load_checkpoint
    from .start import corpus_for
    from .train import Trainer

    checkpoint = load_checkpoint(checkpoint_path)
    if not paths:
        raise ConfigError("--init-from needs the new text to train on: charlm train NEW.txt --init-from RUN")
    model_config, train_config = settle_configs(checkpoint, model_config, train_config, given)
    if train_config.val_file:
        train_config = replace(train_config, val_file=os.path.abspath(train_config.val_file))
    for path in [*paths, *([train_config.val_file] if train_config.val_file else [])]:
        check_file(path)
    lock = on_rank0(lambda: claim_new_run(run_dir, overwrite=overwrite) if run_dir
                    else make_run_dir(root, run_stem(paths[0])))
    try:
        fitted = corpus_for(train_config, paths).tokenizer
        tokenizer, added = grown_tokenizer(checkpoint.tokenizer, fitted)
        corpus = corpus_for(train_config, paths, tokenizer)
        trainer = Trainer(corpus, replace(model_config, vocab_size=len(tokenizer)), train_config, lock.run_dir)
        copy_weights(trainer.task.model, checkpoint.tensors)
        meta = checkpoint.metadata
        trainer.task.init_from = {"path": str(Path(checkpoint.path).resolve()), "step": meta.get("step"),
                                  "fingerprint": meta.get("fingerprint"), "added_tokens": added}
    except BaseException:
        release_new(lock)
        raise
    trainer.run_lock = lock
    return trainer


def describe(init_from) -> str | None:
    """One line for ``charlm info``: where a fine-tuned run started."""
    if not isinstance(init_from, dict):
        return None
    step = init_from.get("step")
    added = init_from.get("added_tokens") or []
    fp = init_from.get("fingerprint") or {}
    named = ", ".join(repr(t) for t in added[:10]) + (" …" if len(added) > 10 else "")
    return (f"{init_from.get('path')}" + (f" (step {step:,})" if isinstance(step, int) else "")
            + (f", text {str(fp.get('train'))[:12]}" if isinstance(fp, dict) and fp.get("train") else "")
            + f", {len(added)} token(s) added" + (f": {named}" if added else ""))
