"""Speed machinery behind one seam: :func:`plan_for` says how to run a per-frame module over folded frames.

Private to cnnlstm: conv-BN folding (``fold``), oneDNN's blocked tensors (``onednn``), the fused training blocks
(``train_block``), and the allocator the ``cnnlstm`` command starts with (``alloc``). Nothing here imports the
rest of cnnlstm.
"""

from .plan import plan_for, tracing

__all__ = ["plan_for", "tracing"]
