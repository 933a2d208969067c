"""SRBNAS: differentiable search of binary SR cells (Su et al., Biomimetics 2024).

``ops`` (search space, Table 1), ``supernet`` (DARTS cells with PC-DARTS partial channels and
edge normalisation), ``regularizers`` (eqs. 4-7), ``architect`` (the alpha/beta step, eq. 8),
``genotype`` (derivation, JSON, drawing), ``network`` (macro-architecture shared with the
discrete model ``binsr.models.srbnas``), ``search`` (the loop behind ``binsr search``).
"""

from binsr.nas.genotype import Genotype, derive_genotype, load_genotype, plot_cell
from binsr.nas.ops import OPS, PRIMITIVES, make_op
from binsr.nas.regularizers import alpha_regularizer, beta_regularizer, ramp
from binsr.nas.supernet import MixedOp, SearchCell, Supernet

__all__ = ["Genotype", "derive_genotype", "load_genotype", "plot_cell", "OPS", "PRIMITIVES", "make_op",
           "alpha_regularizer", "beta_regularizer", "ramp", "MixedOp", "SearchCell", "Supernet"]
