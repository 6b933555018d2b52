"""The built-in unlearning methods; importing this package registers them (``--method NAME``)."""

from unlearnrec.unlearning.methods import references, retrain, unlearnrec_method  # noqa: F401
# influence-function and dampening methods (GIF, IFRU, SSD)
from unlearnrec.unlearning.methods import influence, ssd  # noqa: F401
# partition methods (SISA, RecEraser)
from unlearnrec.unlearning.methods import receraser, sisa  # noqa: F401
