"""The data path: text files, tokenizers, token sequences, corpora and batches, and the built-in corpora."""
