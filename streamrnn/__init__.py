"""streamrnn: streaming anomaly and event detection for sensor data with stateful batched RNN forecasters."""

__version__ = "0.1.0"
