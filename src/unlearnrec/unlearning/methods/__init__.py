"""The built-in unlearning methods; importing this package registers them (``--method NAME``)."""

# influence-function and dampening methods (GIF, IFRU, SSD); IAU (influence approximation, gradients only)
# partition methods (SISA, RecEraser, GraphEraser); CEU (certified edge unlearning)
from unlearnrec.unlearning.methods import (  # noqa: F401
    ceu,
    graph_eraser,
    iau,
    influence,
    receraser,
    references,
    retrain,
    sisa,
    ssd,
    unlearnrec_method,
)
