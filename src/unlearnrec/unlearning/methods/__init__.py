"""The built-in unlearning methods; importing this package registers them (``--method NAME``)."""

from unlearnrec.unlearning.methods import references, retrain, unlearnrec_method  # noqa: F401
# influence-function and dampening methods (GIF, IFRU, SSD)
# partition methods (SISA, RecEraser)
