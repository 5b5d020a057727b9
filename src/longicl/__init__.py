"""longicl: LLM data annotation by in-context learning in ultra-long contexts.

Stages (one module each): tasks -> data -> tokens -> selection -> prompt -> engines -> parse ->
metrics -> rundir, orchestrated by runner. See README.md and ../../conf/ for the settings.
"""

__version__ = "0.1.0"
