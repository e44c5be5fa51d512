"""The Distiller's trainer on JAX (`trainer.py`)."""
