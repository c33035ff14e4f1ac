"""The network: the Keras model, the cell arithmetic, the fast CPU training path, precision, presets."""
