"""The built-in unlearning methods; importing this package registers them (``--method NAME``)."""

# influence-function and dampening methods (GIF, IFRU, SSD)
# partition methods (SISA, RecEraser)
from unlearnrec.unlearning.methods import influence, receraser, references, retrain, sisa, ssd, unlearnrec_method  # noqa: F401  # noqa: F401  # noqa: F401
