"""Runtime watchers of the user's training loop: gradient flow (``training.gradflow``, G001-G006) and the training
doctor (``training.doctor``: ``watch(model, optimizer)``, T001-T029, composing the gradient-flow monitor)."""
