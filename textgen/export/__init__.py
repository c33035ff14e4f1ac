"""Shipping a trained model: SavedModel and TFLite files with their parity checks, and the runtimes
that run them."""
