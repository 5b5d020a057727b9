"""Human review round trip: uncertain annotations out to a labelling tool, decisions back in.

``python -m longicl.review export RUN_DIR --format label-studio|argilla [--below 0.8] [--task NAME] -o FILE``
writes the run's samples below a confidence threshold (all without one), most uncertain first,
in the tool's import format (`formats`); ``python -m longicl.review import RUN_DIR FILE`` reads
the tool's export after humans worked and applies their decisions to the run (`apply`).
"""

from longicl.review.apply import apply_decisions
from longicl.review.formats import FORMATS
from longicl.review.items import Decision, ReviewItem, load_items

__all__ = ["FORMATS", "Decision", "ReviewItem", "apply_decisions", "load_items"]
