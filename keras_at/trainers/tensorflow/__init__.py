"""The Distiller's trainer on TensorFlow (`trainer.py`) and its `MultiWorkerMirroredStrategy`
plumbing (`_multi_worker.py`)."""
