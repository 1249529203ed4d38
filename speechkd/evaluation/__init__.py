"""Evaluation of distilled models beyond WER decoding: upstream probes and compression reports.

:mod:`speechkd.evaluation.upstream` implements ``speechkd distill evaluate-upstream``.
"""
