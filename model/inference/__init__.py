"""Inference of the two model stages on plain arrays (no Ray): devices, weights, stage runners."""
