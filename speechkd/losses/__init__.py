"""Loss functions (pure functions on tensors).

- :mod:`speechkd.losses.rnnt`: pruned RNN-T losses with k2's names (``rnnt_loss_smoothed``,
  ``get_rnnt_prune_ranges``, ``do_rnnt_pruning``, ``rnnt_loss_pruned``, ``rnnt_loss``...), dispatching to k2
  or to the plain-PyTorch :mod:`speechkd.losses.rnnt_portable`.
- :mod:`speechkd.losses.ctc`: ``ctc_loss`` and ``ctc_feasible``.
- :mod:`speechkd.losses.layerwise`: DistilHuBERT's layer-wise L1 + cosine loss.

Submodules are imported explicitly (``from speechkd.losses import rnnt``); this package imports nothing.
"""
