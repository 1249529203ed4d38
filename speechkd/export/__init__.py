"""Deployable students: ONNX export in sherpa-onnx's model contracts and decoding through sherpa-onnx.

:mod:`~speechkd.export.modules` (contract views of an AsrModel), :mod:`~speechkd.export.onnx` (export,
int8), :mod:`~speechkd.export.metadata` (the directory contract and its validator),
:mod:`~speechkd.export.sherpa_decode` (CutSet decoding and scoring). Importing this package imports nothing heavy.
"""
