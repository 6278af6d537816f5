"""Sequence classification (one label per text) and tagging (one label per token) with
(bi)directional recurrent encoders.

Modules, one job each: ``bidir`` (the encoder over variable-length batches), ``model``
(embedding, encoder, head), ``ngrams`` (hashed n-gram input embeddings), ``wide`` (a linear
model over hashed n-grams beside the encoder), ``ensemble`` (K models trained side by side,
probabilities averaged), ``heads`` (pooling and losses), ``sparse_grad`` (gradients dense in a
few spans and row-sparse in the hashed tables), ``sparse_adam`` (Adam updating only the table
rows a batch touched) with ``row_kernels`` (its compiled row passes), ``data`` (TSV, CoNLL and
the restore-spaces task), ``batching`` (vocabularies, encoding, length buckets), ``metrics``,
``store`` (checkpoints), ``runs`` (run directories), ``task`` (what training/loop.py needs from
a classifier or tagger) and ``train`` (its trainer), ``predict`` (using a trained model). Importing this package is light; Numba loads
with the first forward pass.
"""
