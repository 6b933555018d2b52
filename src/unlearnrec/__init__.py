"""unlearnrec: machine unlearning for GNN recommenders.

Data flow: data -> graph -> models (backbones) -> training -> unlearning -> evaluation -> report.
"""

__version__ = "0.1.0"
