"""Decoding: search algorithms and scoring.

* ``ctc``: ``ctc_greedy_search``.
* ``transducer``: ``greedy_search``, ``modified_beam_search`` (+ ``_nbest``), ``transducer_sequence_log_prob``.
* ``streaming``: ``StreamingGreedyDecoder``, ``streaming_greedy_search`` (causal encoder, chunk by chunk).

Import the submodules directly; this package imports nothing heavy so that scoring utilities
stay torch-free.
"""
