"""speechkd: speech knowledge-distillation recipes.

Importing this package must stay cheap (no torch): the CLI's ``--help`` relies on it.
"""

__version__ = "0.1.0"
