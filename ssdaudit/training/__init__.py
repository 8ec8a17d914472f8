"""Runtime watchers of the user's training loop: gradient flow today (``training.gradflow``)."""
