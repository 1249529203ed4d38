"""Training: the loop (:mod:`.trainer`), checkpoints and resume (:mod:`.checkpoint`), lr schedules
(:mod:`.scheduler`), checkpoint averaging (:mod:`.average`) and DDP helpers (:mod:`.dist`).

Import from the submodules (``from speechkd.training.trainer import Trainer, TrainerConfig``);
this package itself imports nothing heavy.
"""
