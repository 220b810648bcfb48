"""Position terms over 2-D offsets inside a window: a learned table and CrossFormer's MLP.

Both terms add, for a query at window cell ``(y_i, x_i)`` and a key at ``(y_j, x_j)``, a per-head
value looked up by the offset ``(dy, dx) = (y_i - y_j, x_i - x_j)`` (query minus key, Swin's and
timm's convention). Offsets are enumerated row-major over ``dy in [-(Wh-1), Wh-1]`` and
``dx in [-(Ww-1), Ww-1]``, so a table has ``(2Wh-1)(2Ww-1)`` rows and the row of an offset is
``(dy + Wh - 1) * (2Ww - 1) + (dx + Ww - 1)``.

- :class:`RelativeBias2D` (Swin, CoAtNet, MaxViT, Astroformer) *learns* the table. Its parameter
  ``relative_position_bias_table ((2Wh-1)(2Ww-1), H)`` and its non-persistent buffer
  ``relative_position_index ((Wh Ww)^2,)`` have the names, shapes and layout of
  ``timm.layers.RelPosBias``, so timm / official checkpoints load unchanged.
- :class:`DynamicPositionBias` (CrossFormer, Wang et al. 2021 / CrossFormer++ 2023) *computes*
  the table with a small MLP of ``(dy, dx)``; the module names ``pos_proj``, ``pos1``, ``pos2``,
  ``pos3`` are the official ones. Since the MLP takes any offset, the group size may change from
  call to call (CrossFormer shrinks the group on small feature maps): it is the attribute
  ``group_size`` unless the call binds a ``group_size`` context ``(Gh, Gw)``.

Token positions: ``q_pos`` / ``k_pos`` are flat row-major cell indices ``y * Ww + x`` inside the
window. The defaults (``arange``) are the usual "every cell of the window attends to every cell";
explicit positions let a caller attend over a subset of the window (e.g. a feature map smaller
than the window a table was trained for).

The biases are added after the ``1/sqrt(d)`` scaling (as in all these papers), so ``scale`` is
not applied. Fast form: a FlexAttention ``score_mod`` that captures the ``(H, R)`` table and turns
``q_idx`` / ``kv_idx`` into the table row with integer arithmetic, so no ``(H, L, L)`` bias is
ever materialized.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .base import PositionContext, PositionTerm

__all__ = ["RelativeBias2D", "DynamicPositionBias", "relative_offsets_2d", "relative_position_index_2d"]


def _pair(size: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {size!r}")
    return pair  # type: ignore[return-value]


def relative_offsets_2d(window: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """All offsets ``(dy, dx)`` of a window in table-row order, ``((2Wh-1)(2Ww-1), 2)`` float."""
    wh, ww = window
    dy = torch.arange(1 - wh, wh, device=device)
    dx = torch.arange(1 - ww, ww, device=device)
    grid = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1)  # (2Wh-1, 2Ww-1, 2)
    return grid.reshape(-1, 2).float()


def relative_position_index_2d(window: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """Table row of every (query cell, key cell) pair, ``(Wh Ww, Wh Ww)`` long (timm's layout)."""
    pos = torch.arange(window[0] * window[1], device=device)
    return _rows_from_positions(pos[:, None], pos[None, :], window)


def _rows_from_positions(q_pos: Tensor, k_pos: Tensor, window: tuple[int, int]) -> Tensor:
    """Table rows for flat cell indices; ``q_pos`` and ``k_pos`` broadcast against each other."""
    wh, ww = window
    dy = torch.div(q_pos, ww, rounding_mode="floor") - torch.div(k_pos, ww, rounding_mode="floor")
    dx = q_pos % ww - k_pos % ww
    return (dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1)


class _OffsetTableTerm(PositionTerm):
    """Shared machinery: a per-call ``(R, H)`` table over the offsets of a ``(Wh, Ww)`` window."""

    num_heads: int

    @abc.abstractmethod
    def _window(self, ctx: PositionContext | None) -> tuple[int, int]:
        """The ``(Wh, Ww)`` window of this call."""

    @abc.abstractmethod
    def table(self, window: tuple[int, int]) -> Tensor:
        """The ``(R, H)`` bias table over the window's offsets."""

    def _check(self, q: Tensor, ctx: PositionContext, window: tuple[int, int]) -> None:
        name = type(self).__name__
        if q.shape[1] != self.num_heads:
            raise ValueError(f"{name} has {self.num_heads} heads but q has {q.shape[1]}")
        area = window[0] * window[1]
        if ctx.default_positions:  # aranges: a shape check, no device sync
            if ctx.q_pos.shape[-1] > ctx.k_pos.shape[-1]:
                # the default queries are the last Lq of the Lk keys: Lq > Lk would put queries at
                # negative cells, which index the table from its end
                raise ValueError(
                    f"{name}: {ctx.q_pos.shape[-1]} queries but {ctx.k_pos.shape[-1]} keys; with default "
                    "positions the queries are the last Lq keys' cells, so pass explicit positions (flat cell indices)"
                )
            longest = max(ctx.q_pos.shape[-1], ctx.k_pos.shape[-1])
            if longest > area:
                raise ValueError(
                    f"{name}: {longest} tokens do not fit the {window[0]}x{window[1]} window ({area} cells); "
                    "pass explicit positions (flat cell indices) or use a larger window"
                )
            return
        for which, pos in (("q_pos", ctx.q_pos), ("k_pos", ctx.k_pos)):
            if pos.dtype.is_floating_point:
                raise ValueError(f"{name} needs integer {which} (flat cell indices), got {pos.dtype}")
            if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= area):
                raise ValueError(
                    f"{name}: {which} must index cells of the {window[0]}x{window[1]} window "
                    f"(0 <= pos < {area}); got range [{int(pos.min())}, {int(pos.max())}]. "
                    "A sequence longer than the window needs explicit positions or a larger window."
                )

    def _rows(self, ctx: PositionContext, window: tuple[int, int]) -> Tensor:
        """Table row per (query, key): ``(Bp, Lq, Lk)`` long."""
        return _rows_from_positions(ctx.q_pos[:, :, None], ctx.k_pos[:, None, :], window)

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        window = self._window(ctx)
        self._check(q, ctx, window)
        table = self.table(window)  # (R, H)
        rows = self._rows(ctx, window)  # (Bp, Lq, Lk)
        out = table[rows.reshape(-1)].view(*rows.shape, self.num_heads)  # (Bp, Lq, Lk, H)
        return out.permute(0, 3, 1, 2).to(q.dtype)  # (Bp, H, Lq, Lk)

    def score_mod(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Callable:
        window = self._window(ctx)
        self._check(q, ctx, window)
        table = self.table(window).t().to(q.dtype)  # (H, R), captured by the closure
        wh, ww = window
        q_pos, k_pos = ctx.q_pos, ctx.k_pos
        per_batch = q_pos.shape[0] > 1 or k_pos.shape[0] > 1
        if per_batch:
            q_pos = q_pos.expand(max(q_pos.shape[0], k_pos.shape[0]), -1)
            k_pos = k_pos.expand(q_pos.shape[0], -1)

        def table2d_mod(score, b, h, q_idx, kv_idx):
            bp = b if per_batch else 0
            qp, kp = q_pos[bp, q_idx], k_pos[bp, kv_idx]
            row = (qp // ww - kp // ww + wh - 1) * (2 * ww - 1) + (qp % ww - kp % ww + ww - 1)
            return score + table[h, row]

        return table2d_mod


class RelativeBias2D(_OffsetTableTerm):
    """Learned relative position bias over a ``(Wh, Ww)`` window (Swin / CoAtNet / Astroformer).

    State-dict compatible with ``timm.layers.RelPosBias`` (no prefix tokens): parameter
    ``relative_position_bias_table`` of shape ``((2Wh-1)(2Ww-1), num_heads)``, non-persistent
    buffer ``relative_position_index`` of shape ``((Wh Ww)^2,)``.
    """

    def __init__(self, window_size: int | tuple[int, int], num_heads: int) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        self.window_size = _pair(window_size, "window_size")
        self.num_heads = num_heads
        rows = (2 * self.window_size[0] - 1) * (2 * self.window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.empty(rows, num_heads))
        self.register_buffer(
            "relative_position_index", relative_position_index_2d(self.window_size).view(-1), persistent=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, num_heads={self.num_heads}"

    def _window(self, ctx: PositionContext | None) -> tuple[int, int]:
        return self.window_size

    def table(self, window: tuple[int, int]) -> Tensor:
        return self.relative_position_bias_table  # (R, H)

    def get_bias(self) -> Tensor:
        """The full-window bias ``(1, H, Wh Ww, Wh Ww)``, as ``timm.layers.RelPosBias.get_bias``."""
        n = self.window_size[0] * self.window_size[1]
        out = self.relative_position_bias_table[self.relative_position_index].view(n, n, -1)  # (N, N, H)
        return out.permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N)

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        n = self.window_size[0] * self.window_size[1]
        if ctx.default_positions and q.shape[-2] == n and k.shape[-2] == n:
            if q.shape[1] != self.num_heads:
                raise ValueError(f"RelativeBias2D has {self.num_heads} heads but q has {q.shape[1]}")
            return self.get_bias().to(q.dtype)  # precomputed index: the common full-window case
        return super().bias(q, k, ctx, scale)

    def set_window_size(self, window_size: int | tuple[int, int]) -> None:
        """Resize to a new window (timm's interpolation of the table), like ``RelPosBias``."""
        from timm.layers import resize_rel_pos_bias_table

        window_size = _pair(window_size, "window_size")
        if window_size == self.window_size:
            return
        rows = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        with torch.no_grad():
            table = resize_rel_pos_bias_table(
                self.relative_position_bias_table,
                new_window_size=window_size,
                new_bias_shape=(rows, self.num_heads),
                old_window_size=self.window_size,
            )
        self.relative_position_bias_table = nn.Parameter(
            table, requires_grad=self.relative_position_bias_table.requires_grad
        )
        self.window_size = window_size
        index = relative_position_index_2d(window_size, device=self.relative_position_index.device)
        self.register_buffer("relative_position_index", index.view(-1), persistent=False)


class DynamicPositionBias(_OffsetTableTerm):
    """CrossFormer's dynamic position bias: an MLP maps each offset ``(dy, dx)`` to ``H`` biases.

    ``pos_proj: Linear(2, D)``; ``pos1``, ``pos2``: ``LayerNorm(D) -> ReLU -> Linear(D, D)``;
    ``pos3``: ``LayerNorm(D) -> ReLU -> Linear(D, H)``; with ``residual=True`` the two middle
    layers are residual. ``hidden_dim`` is the official ``pos_dim`` (CrossFormer uses
    ``dim // 16``: its attention builds the module with ``dim // 4`` and the module quarters it).

    The group (window) size is the attribute ``group_size`` (``set_group_size`` changes it), or,
    for one call, the bound context ``group_size``: ``(Gh, Gw)`` or an int for a square group, e.g.
    ``attention(q, k, v, position=dpb.bind(group_size=(5, 7)))``. A tensor ``[Gh, Gw]`` (or a
    scalar) is accepted too, but reading it syncs with the device on every call.
    """

    optional_context = ("group_size",)

    def __init__(
        self,
        num_heads: int,
        hidden_dim: int,
        group_size: int | tuple[int, int] = 7,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if num_heads < 1 or hidden_dim < 1:
            raise ValueError(f"num_heads and hidden_dim must be positive, got {num_heads}, {hidden_dim}")
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.residual = residual
        self.group_size = _pair(group_size, "group_size")
        self.pos_proj = nn.Linear(2, hidden_dim)
        self.pos1 = self._layer(hidden_dim, hidden_dim)
        self.pos2 = self._layer(hidden_dim, hidden_dim)
        self.pos3 = self._layer(hidden_dim, num_heads)

    @staticmethod
    def _layer(dim_in: int, dim_out: int) -> nn.Sequential:
        # index 1 (ReLU) has no parameters: keys are pos1.0.* (LayerNorm) and pos1.2.* (Linear)
        return nn.Sequential(nn.LayerNorm(dim_in), nn.ReLU(), nn.Linear(dim_in, dim_out))

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, hidden_dim={self.hidden_dim}, group_size={self.group_size}, "
            f"residual={self.residual}"
        )

    def set_group_size(self, group_size: int | tuple[int, int]) -> None:
        self.group_size = _pair(group_size, "group_size")

    def mlp(self, offsets: Tensor) -> Tensor:
        """Biases of arbitrary offsets: ``offsets (..., 2)`` float ``(dy, dx)`` -> ``(..., H)``."""
        pos = self.pos_proj(offsets.to(self.pos_proj.weight.dtype))  # (..., D)
        if self.residual:
            pos = pos + self.pos1(pos)
            pos = pos + self.pos2(pos)
            return self.pos3(pos)  # (..., H)
        return self.pos3(self.pos2(self.pos1(pos)))  # (..., H)

    def table(self, window: tuple[int, int]) -> Tensor:
        return self.mlp(relative_offsets_2d(window, device=self.pos_proj.weight.device))  # (R, H)

    def _window(self, ctx: PositionContext | None) -> tuple[int, int]:
        if ctx is None or "group_size" not in ctx.extras:
            return self.group_size
        size = ctx.extras["group_size"]
        if isinstance(size, Tensor):  # older callers bind a tensor: reading it is a device sync
            size = size.reshape(-1).tolist()
        if not isinstance(size, int):
            size = tuple(size)
            if len(size) not in (1, 2):
                raise ValueError(f"DynamicPositionBias: context group_size must be G or (Gh, Gw), got {size}")
            size = size * (2 // len(size))  # (G,) -> (G, G)
        return _pair(size, "group_size")

    def get_bias(self, group_size: int | tuple[int, int] | None = None) -> Tensor:
        """The full-group bias ``(1, H, Gh Gw, Gh Gw)`` for ``group_size`` (default: the attribute)."""
        window = self.group_size if group_size is None else _pair(group_size, "group_size")
        rows = relative_position_index_2d(window, device=self.pos_proj.weight.device)  # (N, N)
        out = self.table(window)[rows.reshape(-1)].view(*rows.shape, self.num_heads)  # (N, N, H)
        return out.permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N)

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        window = self._window(ctx)
        n = window[0] * window[1]
        if ctx.default_positions and q.shape[-2] == n and k.shape[-2] == n:
            if q.shape[1] != self.num_heads:
                raise ValueError(f"DynamicPositionBias has {self.num_heads} heads but q has {q.shape[1]}")
            return self.get_bias(window).to(q.dtype)
        return super().bias(q, k, ctx, scale)
