"""Python face of the compiled ops: ``torch.ops.fused_lstm.*`` and their fake kernels.

The fake (meta) kernels give torch.compile / opcheck the output shapes without running anything.
Shapes follow Note [Op schemas] in csrc/lstm_ops.cpp: per-token buffers are [T, B, X] for padded
input and [N, X] for packed input.
"""

import torch

from . import _C  # noqa: F401  (loads the extension, which registers torch.ops.fused_lstm)

lstm_layer_forward = torch.ops.fused_lstm.lstm_layer_forward
lstm_layer_backward = torch.ops.fused_lstm.lstm_layer_backward

# The forward packet's own C++ callable, for the plain-eager hot paths (fused_lstm/_eager.py):
# OpOverloadPacket.__call__ is a Python frame around it (about 0.5 us of a ~20 us cell step)
# that does something else only for torchbind overloads, which this op has none of. Those paths
# call it only while lstm_layer_forward is still the packet (tests replace it to count calls);
# torch.compile'd code keeps the packet, which dynamo knows.
FORWARD_PACKET = lstm_layer_forward
FORWARD_CALLABLE = getattr(lstm_layer_forward, "_op", lstm_layer_forward)


BACKWARD_PACKET = lstm_layer_backward


def ops_replaced() -> bool:
    """Whether either op was replaced (tests count their calls): the routes that call the ops
    from C++ (both directions of a layer at once, fused_lstm/_eager.py) then step aside."""
    return lstm_layer_forward is not FORWARD_PACKET or lstm_layer_backward is not BACKWARD_PACKET


def eager_forward():
    """The forward op for plain eager calls: FORWARD_CALLABLE, unless lstm_layer_forward was
    replaced."""
    forward = lstm_layer_forward
    return FORWARD_CALLABLE if forward is FORWARD_PACKET else forward


def _opmath_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_devices(op, input, batch_sizes, **tensors):
    # The dispatcher runs a fake kernel whenever ANY argument is on the meta device, so these
    # checks mirror the C++ ones that the device kernels would have made (same messages).
    for name, t in tensors.items():
        if t is not None and t.device != input.device:
            raise RuntimeError(f"fused_lstm.{op}: expected {name} on the device of input "
                               f"({input.device}), got {t.device}")
    if batch_sizes is not None and (batch_sizes.device.type != "cpu" or batch_sizes.dim() != 1
                                    or batch_sizes.dtype != torch.int64):
        raise RuntimeError(f"fused_lstm.{op}: expected batch_sizes to be a 1-D int64 CPU tensor "
                           f"(PackedSequence.batch_sizes), got {batch_sizes.dim()}-D "
                           f"{batch_sizes.dtype} on {batch_sizes.device}")


@torch.library.register_fake("fused_lstm::lstm_layer_forward")
def _lstm_layer_forward_fake(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                             batch_sizes, reverse, save_workspace):
    _check_devices("lstm_layer_forward", input, batch_sizes, hx=hx, cx=cx, weight_ih=weight_ih,
                   weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh, weight_hr=weight_hr)
    hidden = weight_hh.size(0) // 4
    proj = weight_hr.size(0) if weight_hr is not None else hidden
    tokens_shape = input.shape[:-1]
    output = input.new_empty((*tokens_shape, proj))
    workspace_dtype = _opmath_dtype(input.dtype)
    if save_workspace:
        gates = input.new_empty((*tokens_shape, 4 * hidden), dtype=workspace_dtype)
        cells = input.new_empty((*tokens_shape, hidden), dtype=workspace_dtype)
    else:
        gates = input.new_empty((0,), dtype=workspace_dtype)
        cells = input.new_empty((0,), dtype=workspace_dtype)
    return output, hx.new_empty(hx.shape), cx.new_empty(cx.shape), gates, cells


@torch.library.register_fake("fused_lstm::lstm_layer_backward")
def _lstm_layer_backward_fake(grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh,
                              weight_hr, batch_sizes, reverse, has_bias, output, gates, cells,
                              output_mask):
    _check_devices("lstm_layer_backward", input, batch_sizes, grad_output=grad_output,
                   grad_hy=grad_hy, grad_cy=grad_cy, hx=hx, cx=cx, weight_ih=weight_ih,
                   weight_hh=weight_hh, weight_hr=weight_hr, output=output, gates=gates,
                   cells=cells)
    want_input, want_weights = output_mask

    def maybe(want, like):
        return like.new_empty(like.shape) if want else input.new_empty((0,))

    grad_bias = (input.new_empty((weight_hh.size(0),)) if want_weights and has_bias
                 else input.new_empty((0,)))
    grad_weight_hr = (maybe(want_weights, weight_hr) if weight_hr is not None
                      else input.new_empty((0,)))
    return (maybe(want_input, input), hx.new_empty(hx.shape), cx.new_empty(cx.shape),
            maybe(want_weights, weight_ih), maybe(want_weights, weight_hh), grad_bias,
            grad_weight_hr)


# Note [vmap rules]
# How each argument and output of the ops behaves when a vmapped dimension V is folded into the
# LSTM batch: "token" tensors are [T, B, X] (padded) or [N, X] (packed) and "row" tensors
# [B, X]; the vmapped dimension goes right after B (or N), so the folded rows are ordered
# (b, v) and packed step t runs its first V * batch_sizes[t] rows. Weights must not be vmapped
# to fold; batch_sizes never may be (a packed schedule is shared by the whole vmapped batch).
FORWARD_VMAP_ROLES = (
    ("token", "row", "row", "weight", "weight", "weight", "weight", "weight", "batch_sizes",
     None, None),
    ("token", "row", "row", "token", "token"))
BACKWARD_VMAP_ROLES = (
    ("token", "row", "row", "token", "row", "row", "weight", "weight", "weight", "batch_sizes",
     None, None, "token", "token", "token", None),
    ("token", "row", "row", "weight", "weight", "weight", "weight"))


VMAPPED_BATCH_SIZES = ("fused_lstm: vmap over batch_sizes is not supported (the packed schedule "
                       "must be shared by the whole vmapped batch); vmap over the packed data "
                       "instead")


def check_batch_sizes_not_vmapped(batch_sizes) -> None:
    """Raises the clear error before anything reads a vmapped batch_sizes (``.item()``)."""
    if batch_sizes is not None and torch._C._functorch.is_batchedtensor(batch_sizes):
        raise RuntimeError(VMAPPED_BATCH_SIZES)


def _fold(tensor, bdim, axis, size):
    if tensor is None:
        return None
    if bdim is None:
        tensor = tensor.unsqueeze(axis + 1).expand(
            *tensor.shape[:axis + 1], size, *tensor.shape[axis + 1:])
    else:
        tensor = tensor.movedim(bdim, axis + 1)
    return tensor.flatten(axis, axis + 1)


def fold_or_loop_vmap(fn, roles, info, in_dims, args, fold):
    """The vmap rule of ``fn`` (an op, or the autograd.Function's apply) with ``roles`` =
    (argument roles, output roles) as in Note [vmap rules]: one call of ``fn`` over the folded
    batch when ``fold`` and no weight is vmapped, else one call per vmapped slice."""
    arg_roles, out_roles = roles
    size = info.batch_size
    bs_index = arg_roles.index("batch_sizes")
    if in_dims[bs_index] is not None:
        raise RuntimeError(VMAPPED_BATCH_SIZES)
    if not fold or any(d is not None for r, d in zip(arg_roles, in_dims) if r == "weight"):
        slices = [fn(*(a.select(d, v) if isinstance(d, int) else a
                       for a, d in zip(args, in_dims)))
                  for v in range(size)]
        return tuple(torch.stack(column) for column in zip(*slices)), (0,) * len(out_roles)
    token_axis = 0 if args[bs_index] is not None else 1
    axes = {"token": token_axis, "row": 0}
    folded = [_fold(a, d, axes[r], size) if r in axes else a
              for a, d, r in zip(args, in_dims, arg_roles)]
    if args[bs_index] is not None:
        folded[bs_index] = args[bs_index] * size
    outputs, out_dims = [], []
    for out, role in zip(fn(*folded), out_roles):
        if out.dim() == 1 and out.numel() == 0:  # not computed (workspace, masked gradient)
            outputs.append(out)
            out_dims.append(None)
        else:
            axis = axes[role]
            outputs.append(out.unflatten(axis, (out.size(axis) // size, size)))
            out_dims.append(axis + 1)
    return tuple(outputs), tuple(out_dims)


@torch.library.register_vmap("fused_lstm::lstm_layer_forward")
def _lstm_layer_forward_vmap(info, in_dims, *args):
    # The op called directly under vmap (LSTMLayerFunction has its own rule, the same one).
    return fold_or_loop_vmap(lstm_layer_forward, FORWARD_VMAP_ROLES, info, in_dims, args,
                             fold=True)


@torch.library.register_vmap("fused_lstm::lstm_layer_backward")
def _lstm_layer_backward_vmap(info, in_dims, *args):
    # Per-sample weight gradients (vmap(grad(f)), jacrev over weights) need one sum per vmapped
    # slice, which the folded call cannot give: loop then. Input/state gradients fold.
    output_mask = args[-1]
    return fold_or_loop_vmap(lstm_layer_backward, BACKWARD_VMAP_ROLES, info, in_dims, args,
                             fold=not output_mask[1])
