"""ConvLSTM (Shi et al. 2015): an LSTM whose input, state and output are maps, over a clip ``(N, T, C, H, W)``.

Where an LSTM multiplies vectors by matrices, a ConvLSTM convolves maps: each layer's four gates come from
one ``Conv2d`` over the concatenation of the step's input maps and the layer's previous hidden maps, with
"same" padding, so every step keeps ``H, W`` and the state says *where* as well as *what*. The semantics
are those of Keras' ``ConvLSTM2D``: gates ``i, f, g, o``, sigmoid and tanh, no peepholes, the forget
gate's bias starting at 1 (``unit_forget_bias``), ``return_sequences`` (the outputs of every step; the
last step is ``outputs[:, -1]``, or the final ``h[-1]``), and a kernel size. ``dropout`` is
:class:`torch.nn.LSTM`'s: between stacked layers, in training.

One step (:meth:`ConvLSTM.step`) is the one implementation: the clip's forward runs it over ``T`` (a Python
loop in eager mode; under ``torch.export``, the ONNX exporter's capture, a ``scan`` that exports as an ONNX
``Scan`` with a dynamic ``T``), and streaming calls it frame by frame.

>>> layer = ConvLSTM(8, 16, kernel_size=3, num_layers=2)
>>> out, (h, c) = layer(torch.zeros(2, 5, 8, 7, 7))
>>> out.shape, h.shape
(torch.Size([2, 5, 16, 7, 7]), torch.Size([2, 2, 16, 7, 7]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._messages import maps_rnn_problem
from ..errors import ConfigError, ShapeError
from ..lengths import check_lengths, valid_mask

__all__ = ["ConvLSTM"]

State = tuple[torch.Tensor, torch.Tensor]


class ConvLSTM(nn.Module):
    """A stacked ConvLSTM over clips of feature maps, with lengths for padded clips and a streaming step.

    Args:
        in_channels: ``C`` of the maps it reads (:class:`~cnnlstm.CNNLSTM` infers it from the backbone).
        hidden_size: ``D``, the channels of each layer's state maps and of the outputs.
        kernel_size: of each layer's gate convolution, an int or ``(kh, kw)``; "same" padding keeps ``H, W``
            (for an even size the extra row and column are padded after, as Keras does).
        num_layers: stacked layers; the first reads the input maps, each next one the previous one's outputs.
        dropout: dropout on each layer's outputs but the last, in training (as :class:`torch.nn.LSTM`).
        bias: whether the gate convolutions have a bias.

    Shapes:
        x: ``(N, T, C, H, W)``; lengths: optional ``(N,)`` valid steps of a padded clip; state: optional
        ``(h, c)``, each ``(layers, N, D, H, W)`` (zeros when None).

        returns: ``(outputs (N, T, D, H, W), (h, c))``: the top layer's hidden maps at every step (Keras'
        ``return_sequences=True``), and each layer's final state. With lengths, a padded step changes no
        state (each sample's final state is the one at its last valid step) and its output is zeros.

    Attributes:
        cells: one ``Conv2d(C_in + D, 4 * D)`` per layer, ``C_in = C`` for the first, ``D`` after; its output
            channels are the gates ``i, f, g, o`` in that order.
    """

    takes_lengths = True  # padded steps change no state: the shape doctor does not warn that it runs over them
    reads_maps = True  # a recurrence over maps (N, T, C, H, W): the shape doctor checks its input as such
    bidirectional = False

    def __init__(
        self,
        in_channels: int,
        hidden_size: int = 64,
        kernel_size: int | tuple[int, int] = 3,
        num_layers: int = 1,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels < 1 or hidden_size < 1 or num_layers < 1:
            raise ConfigError(
                f"ConvLSTM sizes must be positive, got in_channels={in_channels}, hidden_size={hidden_size}, "
                f"num_layers={num_layers}"
            )
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(kernel) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in kernel):
            raise ConfigError(f"ConvLSTM kernel_size must be a positive int or (kh, kw), got {kernel_size!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"ConvLSTM dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.hidden_size = hidden_size
        self.kernel_size = kernel
        self.num_layers = num_layers
        self.dropout = dropout
        self.cells = nn.ModuleList(
            nn.Conv2d(c + hidden_size, 4 * hidden_size, kernel, padding="same", bias=bias)
            for c in [in_channels] + [hidden_size] * (num_layers - 1)
        )
        if bias:
            with torch.no_grad():
                for cell in self.cells:
                    cell.bias[hidden_size : 2 * hidden_size].fill_(1.0)  # the forget gate starts open (Keras)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.hidden_size}, kernel_size={self.kernel_size}, num_layers={self.num_layers}"
            + (f", dropout={self.dropout}" if self.dropout else "")
        )

    @property
    def input_size(self) -> int:
        """``C``, the channels of the maps it reads."""
        return self.in_channels

    @property
    def out_features(self) -> int:
        """``D``, the channels of each output step's maps."""
        return self.hidden_size

    def output_shape(self, shape: tuple) -> tuple:
        """The outputs' shape for input maps of ``shape`` ``(N, T, C, H, W)`` (entries may be None).

        >>> ConvLSTM(8, 16).output_shape((1, None, 8, 7, 7))
        (1, None, 16, 7, 7)
        """
        self._check(tuple(shape))
        n, t, _c, h, w = shape
        return (n, t, self.hidden_size, h, w)

    def state_shape(self, n: int, h: int, w: int) -> tuple[int, ...]:
        """The shape of ``h`` and of ``c`` for ``n`` sequences of ``h x w`` maps: ``(layers, N, D, H, W)``."""
        return (self.num_layers, n, self.hidden_size, h, w)

    # ------------------------------------------------------------------ checks

    def _check(self, shape: tuple) -> None:
        found = maps_rnn_problem(shape, self.in_channels)
        if found is not None:
            problem, fix = found
            raise ShapeError(
                f"ConvLSTM wants maps (N, T, C={self.in_channels}, H, W), got {len(shape)}-D {shape}: {problem}. {fix}"
            )

    def _state(self, x: torch.Tensor, state: State | None) -> State:
        """The given state, checked against the maps ``x`` ``(N, C, H, W)``, or zeros."""
        n, _c, h, w = x.shape
        want = self.state_shape(n, h, w)
        if state is None:
            zeros = x.new_zeros(want)
            return zeros, zeros.clone()
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ShapeError(f"a ConvLSTM's state is (h, c), each (layers, N, D, H, W) = {want}, got {type(state)}")
        for name, s in zip("hc", state):
            if tuple(s.shape) != want:
                raise ShapeError(
                    f"ConvLSTM state {name} must be (layers, N, D, H, W) = {want} for maps {tuple(x.shape)}, "
                    f"got {tuple(s.shape)}: the state belongs to other streams or to frames of another size"
                )
        return state[0], state[1]

    # ------------------------------------------------------------------ one step, the clip

    def _step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, valid: torch.Tensor | None = None):
        """One step of every layer: x ``(N, C, H, W)``; h, c ``(layers, N, D, H, W)``; valid ``(N, 1, 1, 1)``
        (False: a padded step, which keeps the state). Returns the output ``(N, D, H, W)``, h and c."""
        hs, cs = [], []
        inp = x
        for i, cell in enumerate(self.cells):
            if i and self.dropout and self.training:
                inp = F.dropout(inp, self.dropout, training=True)
            gates = cell(torch.cat([inp, h[i]], dim=1))  # (N, 4*D, H, W)
            i_g, f_g, g_g, o_g = gates.chunk(4, dim=1)  # each (N, D, H, W)
            c_i = torch.sigmoid(f_g) * c[i] + torch.sigmoid(i_g) * torch.tanh(g_g)
            h_i = torch.sigmoid(o_g) * torch.tanh(c_i)
            if valid is not None:  # a padded step holds the state
                h_i, c_i = torch.where(valid, h_i, h[i]), torch.where(valid, c_i, c[i])
            hs.append(h_i)
            cs.append(c_i)
            inp = h_i
        out = inp if valid is None else torch.where(valid, inp, torch.zeros_like(inp))  # padded steps give zeros
        return out, torch.stack(hs), torch.stack(cs)  # (N, D, H, W), (layers, N, D, H, W) x 2

    def step(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One step of a stream: x ``(N, C, H, W)``, one frame's maps of each stream; state ``(h, c)`` each
        ``(layers, N, D, H, W)``, None for fresh streams. Returns ``(output (N, D, H, W), (h, c))``."""
        if x.dim() != 4:
            raise ShapeError(
                f"ConvLSTM.step wants one step's maps (N, C={self.in_channels}, H, W), got {x.dim()}-D "
                f"{tuple(x.shape)}" + (": a whole clip; call the layer itself on it" if x.dim() == 5 else "")
            )
        if x.shape[1] != self.in_channels:
            raise ShapeError(
                f"ConvLSTM.step wants (N, C={self.in_channels}, H, W), got {tuple(x.shape)} with C={x.shape[1]}: "
                f"feed {self.in_channels}-channel maps or build it with in_channels={x.shape[1]}"
            )
        h, c = self._state(x, state)
        out, h, c = self._step(x, h, c)
        return out, (h, c)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Args: x ``(N, T, C, H, W)``, lengths ``(N,)``, state ``(h, c)``. Returns ``((N, T, D, H, W), (h, c))``."""
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"ConvLSTM wants a tensor (N, T, C, H, W), got {type(x).__name__}")
        self._check(tuple(x.shape))
        n, t = x.shape[:2]
        lengths = check_lengths(lengths, n, t, "ConvLSTM")
        h, c = self._state(x[:, 0], state)
        mask = None
        if lengths is not None and (x.device.type == "meta" or bool((lengths < t).any())):
            mask = valid_mask(lengths.to(x.device), t)  # (N, T)
        if torch.compiler.is_exporting():
            return self._scan(x, h, c, mask)
        outs = []
        for s in range(t):
            valid = None if mask is None else mask[:, s].view(n, 1, 1, 1)
            out, h, c = self._step(x[:, s], h, c, valid)
            outs.append(out)
        return torch.stack(outs, dim=1), (h, c)  # (N, T, D, H, W)

    def _scan(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None):
        """The same loop as a ``scan`` over ``T``, which ``torch.export`` captures with a dynamic ``T`` (an ONNX
        ``Scan``) where a Python loop would be unrolled for the example's length."""
        from torch._higher_order_ops.scan import scan

        n = x.shape[0]

        def body(carry: State, step: tuple[torch.Tensor, ...]):
            x_t = step[0]
            valid = step[1].view(n, 1, 1, 1) if len(step) > 1 else None
            out, h_t, c_t = self._step(x_t, carry[0], carry[1], valid)
            return (h_t, c_t), out.clone()

        steps = (x.transpose(0, 1),) if mask is None else (x.transpose(0, 1), mask.transpose(0, 1))  # (T, N, ...)
        (h, c), outs = scan(body, (h, c), steps)
        return outs.transpose(0, 1), (h, c)  # (N, T, D, H, W)
