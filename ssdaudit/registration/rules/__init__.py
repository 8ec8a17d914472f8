"""The rules of ``ssdaudit params`` that judge the evidence (the model index, the forward trace, the probe status),
grouped by the evidence they read: one module per family of codes, each function building its own findings.

``containers`` R001 R002 R003 R006 N006 (the walk), ``forward_built`` R005 R011 (modules and parameters forward
builds), ``tensors`` R004 N005 (plain tensor attributes), ``device_move`` R008, ``probe_notes`` N003 N004.
"""
