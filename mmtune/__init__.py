"""mmtune: Ray Tune + Optuna hyperparameter search for video prediction on Moving MNIST."""

__version__ = "0.1.0"
