"""Fitting a network on a corpus: options, data preparation, callbacks, backups, the run itself,
learning-rate schedules, fine-tuning, hyper-parameter search, and where training runs."""
