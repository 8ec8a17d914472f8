"""ssdaudit inside the tools people already train with: Lightning, Hugging Face's Trainer, TensorBoard.

Each integration is an optional extra (``pip install 'ssdaudit[lightning]'``, ``[transformers]``,
``[tensorboard]``) and is imported only when used.
"""
