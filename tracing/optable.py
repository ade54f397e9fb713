"""Per-op table of vector FLOPs and byte classes: the knowledge the dispatch counter applies.

Matmul-class FLOPs come from `torch.utils.flop_counter.flop_registry` (plus `tracing.attention`
for ops it lacks). Everything else an aten op costs is decided here, as data: `VECTOR_OPS` maps an
op name (overload packet, e.g. 'aten.add'; in-place 'aten.add_' falls back to 'aten.add') to a
rule name, and `RULES` maps a rule name to a small function of the op's described arguments and
output (tensors replaced by `TensorMeta` by `tracing.costs`, the only place that sees tensors).

Conventions (one FLOP = one scalar arithmetic or comparison result):
- pointwise (unary, binary, ternary: add, mul, relu, gelu, silu, exp, rsqrt, where, eq...):
  1 FLOP per output element per op, whatever the op's internal complexity (gelu counts 1).
- reduction (sum, mean, amax, max, argmax, any...): numel of the first tensor input.
- softmax (_softmax, _log_softmax, _safe_softmax): 5 per element (max, subtract, exp, sum, divide).
- norm with statistics computed (native_layer_norm, native_group_norm, training batch norm):
  5 per input element (mean, subtract, square, sum, scale) + 1 per element per affine tensor
  (weight, bias) given. Batch norm with given statistics (eval): 2 per element + affine.
- bias epilogue: addmm/baddbmm add their `self` term and a convolution its bias: numel(output)
  vector FLOPs, so `Linear` costs the same whether bias-add is fused (addmm) or not (mm + add).
- scan (cumsum, cumprod, cummax, cummin, logcumsumexp): 1 per input element.
- selection (sort, argsort via sort, topk, kthvalue, median, msort): 1 per input element. The
  comparisons of a sort grow as n log n; the convention keeps every count polynomial in the
  shapes (formulas and derived closed forms have no log) and these ops sit on routing-sized
  tensors (tokens x experts), so the difference is negligible next to the experts' matmuls.
- counting (histc, bincount, nonzero, count_nonzero): 1 per input element (one bin increment
  or one comparison with zero).
- accumulate (scatter_add, index_add, index_put with accumulate=True, scatter with a reduce,
  scatter_reduce): 1 per scattered element (numel of the index for scatter*, of the source for
  index_add, of the values for index_put), + 1 per output element for reduce="mean" (the
  division); plain scatter / index_put write without arithmetic: 0.
- search (searchsorted, bucketize): 1 per searched element (the same convention as selection).
- variance (var, std, var_mean, std_mean with their correction overload): 4 per input element
  (mean, subtract, square, sum) + 1 per output element (scale by 1/(n - correction)), + 1 more
  per output element for std (sqrt).
- aminmax: 2 per input element (a min and a max). linalg_vector_norm: 2 per input element
  (|x|^p, sum) + 1 per output element (the root).
- pooling (max_pool*_with_indices, avg_pool*): kernel volume per output element (the window's
  comparisons or adds; avg's divide replaces the first add).
- linalg_solve_triangular (A: n x n, B: n x k, batched): n^2 k per batch (the substitution's
  multiply-adds, half of a dense n x n x k matmul's 2 n^2 k).
- logsumexp: 4 per input element (max, subtract, exp, sum) + 2 per output element (log, add).
- zero: data movement and factories (embedding, cat, clone, _to_copy, copy_, zeros, arange...):
  0 FLOPs; their bytes still count.
Byte classes (see `tracing.costs`): `ALLOC_ONLY` ops (empty*) move no bytes; `METADATA_OPS` are
metadata-only ops the schema does not mark as views (_unsafe_view, detach_, as_strided_);
`WRITE_ONLY_INPLACE` ops do not read their `self` (copy_, fill_, zero_, random fills).
Ops in no table (aten.special_zeta, aten.mode, ...) are *uncovered*: reported by name, never 0.

Example:
    >>> from formula_db.meta import TensorMeta
    >>> x = TensorMeta((4, 8), "float32", "cpu", 4)
    >>> vector_flops("aten.mul_", (x, x), {}, x)
    32
"""
from __future__ import annotations

from collections.abc import Callable
from math import prod
from typing import Any

from formula_db.meta import TensorMeta

SOFTMAX_FLOPS_PER_ELEMENT = 5  # max, subtract, exp, sum, divide
NORM_FLOPS_PER_ELEMENT = 5  # mean, subtract, square, sum (variance), scale by rstd
NORM_GIVEN_STATS_FLOPS_PER_ELEMENT = 2  # subtract mean, scale by rstd
SDPA_FLOPS_PER_SCORE = 1 + SOFTMAX_FLOPS_PER_ELEMENT  # scale + softmax; +1 when masked
VARIANCE_FLOPS_PER_ELEMENT = 4  # mean, subtract, square, sum
LOGSUMEXP_FLOPS_PER_ELEMENT = 4  # max, subtract, exp, sum

Rule = Callable[[tuple, dict, Any], int]


def _tensors(value: Any) -> list[TensorMeta]:
    if isinstance(value, TensorMeta):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _first(value: Any) -> TensorMeta | None:
    found = _tensors(value)
    return found[0] if found else None


def _numel(value: Any) -> int:
    t = _first(value)
    return t.numel if t is not None else 0


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _affine(args: tuple, kwargs: dict, slots: tuple[tuple[int, str], ...]) -> int:
    return sum(isinstance(_arg(args, kwargs, i, n), TensorMeta) for i, n in slots)


def pointwise(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(out)


def reduction(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(args)


def softmax(args: tuple, kwargs: dict, out: Any) -> int:
    return SOFTMAX_FLOPS_PER_ELEMENT * _numel(out)


def layer_norm(args: tuple, kwargs: dict, out: Any) -> int:
    n = _numel(args[:1])
    return n * (NORM_FLOPS_PER_ELEMENT + _affine(args, kwargs, ((2, "weight"), (3, "bias"))))


def group_norm(args: tuple, kwargs: dict, out: Any) -> int:
    n = _numel(args[:1])
    return n * (NORM_FLOPS_PER_ELEMENT + _affine(args, kwargs, ((1, "weight"), (2, "bias"))))


def batch_norm(args: tuple, kwargs: dict, out: Any) -> int:
    """native_batch_norm(input, weight, bias, running_mean, running_var, training, ...)."""
    training = _arg(args, kwargs, 5, "training")
    per = NORM_FLOPS_PER_ELEMENT if training is not False else NORM_GIVEN_STATS_FLOPS_PER_ELEMENT
    return _numel(args[:1]) * (per + _affine(args, kwargs, ((1, "weight"), (2, "bias"))))


def batch_norm_stats(args: tuple, kwargs: dict, out: Any) -> int:
    """_native_batch_norm_legit(input, weight, bias, ...): statistics computed from the batch."""
    n = _numel(args[:1])
    return n * (NORM_FLOPS_PER_ELEMENT + _affine(args, kwargs, ((1, "weight"), (2, "bias"))))


def batch_norm_given_stats(args: tuple, kwargs: dict, out: Any) -> int:
    n = _numel(args[:1])
    affine = _affine(args, kwargs, ((1, "weight"), (2, "bias")))
    return n * (NORM_GIVEN_STATS_FLOPS_PER_ELEMENT + affine)


def bias_epilogue(args: tuple, kwargs: dict, out: Any) -> int:
    """addmm/baddbmm(self, ...): the `self` add; convolution(input, weight, bias, ...): bias add."""
    return _numel(out)


def conv_bias(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(out) if isinstance(_arg(args, kwargs, 2, "bias"), TensorMeta) else 0


def sdpa(args: tuple, kwargs: dict, out: Any) -> int:
    """scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, ...):
    per score element (batch x query heads x Lq x Lk): scale + softmax, +1 when masked."""
    q, k = _first(args[:1]), _first(args[1:2])
    if q is None or k is None or q.ndim < 2:
        return 0
    scores = prod(q.shape[:-1]) * k.shape[-2]
    masked = (_arg(args, kwargs, 3, "attn_mask") is not None
              or bool(_arg(args, kwargs, 5, "is_causal")))
    return scores * (SDPA_FLOPS_PER_SCORE + int(masked))


def zero(args: tuple, kwargs: dict, out: Any) -> int:
    return 0


def _is_mean(reduce: Any) -> bool:
    return reduce == "mean"


def scatter_accumulate(args: tuple, kwargs: dict, out: Any) -> int:
    """scatter_add(self, dim, index, src); scatter_reduce.two(self, dim, index, src, reduce, ...);
    scatter.reduce/value_reduce(self, dim, index, src|value, *, reduce); plain scatter: 0."""
    reduce = kwargs.get("reduce", args[4] if len(args) > 4 else None)
    index = _first(args[2:3]) if len(args) > 2 else _first(kwargs.get("index"))
    if index is None:
        return 0
    return index.numel + (_numel(out) if _is_mean(reduce) else 0)


def scatter_add(args: tuple, kwargs: dict, out: Any) -> int:
    index = _first(args[2:3]) if len(args) > 2 else _first(kwargs.get("index"))
    return index.numel if index is not None else 0


def scatter_plain(args: tuple, kwargs: dict, out: Any) -> int:
    """scatter.src/.value write without arithmetic; .reduce/.value_reduce accumulate."""
    return scatter_accumulate(args, kwargs, out) if kwargs.get("reduce") is not None else 0


def index_add(args: tuple, kwargs: dict, out: Any) -> int:
    """index_add(self, dim, index, source, alpha): one add per source element."""
    return _numel(_arg(args, kwargs, 3, "source"))


def index_put(args: tuple, kwargs: dict, out: Any) -> int:
    """index_put(self, indices, values, accumulate=False): one add per value when accumulating."""
    return _numel(_arg(args, kwargs, 2, "values")) if _arg(args, kwargs, 3, "accumulate") else 0


def search(args: tuple, kwargs: dict, out: Any) -> int:
    """searchsorted / bucketize: one per searched element (the output's size)."""
    return _numel(out)


def variance(args: tuple, kwargs: dict, out: Any) -> int:
    """var/var_mean(self, dim, *, correction, keepdim): mean, subtract, square, sum per input
    element + the 1/(n - correction) scale per output element (var_mean: of the variance)."""
    return VARIANCE_FLOPS_PER_ELEMENT * _numel(args[:1]) + _numel(out)


def std(args: tuple, kwargs: dict, out: Any) -> int:
    """std/std_mean: variance + a square root per output element."""
    return VARIANCE_FLOPS_PER_ELEMENT * _numel(args[:1]) + 2 * _numel(out)


def aminmax(args: tuple, kwargs: dict, out: Any) -> int:
    return 2 * _numel(args[:1])


def vector_norm(args: tuple, kwargs: dict, out: Any) -> int:
    return 2 * _numel(args[:1]) + _numel(out)


def pooling(args: tuple, kwargs: dict, out: Any) -> int:
    """max_pool2d_with_indices / avg_pool2d (self, kernel_size, stride, ...): a window per output
    element; a single kernel size applies to every spatial dimension."""
    x = _first(args[:1])
    kernel = _arg(args, kwargs, 1, "kernel_size")
    if x is None or kernel is None:
        return 0
    sizes = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
    spatial = max(1, x.ndim - 2) if len(sizes) == 1 else len(sizes)
    sizes = sizes * spatial if len(sizes) == 1 else sizes
    return _numel(out) * prod(int(k) for k in sizes)


def solve_triangular(args: tuple, kwargs: dict, out: Any) -> int:
    """linalg_solve_triangular(A, B, *, upper, left=True, ...): batch x n^2 x k."""
    a, b = _first(args[:1]), _first(args[1:2])
    if a is None or b is None or a.ndim < 2 or b.ndim < 2:
        return 0
    left = kwargs.get("left", True)
    n = a.shape[-1]
    k = b.shape[-1] if left else b.shape[-2]
    batch = b.numel // (b.shape[-1] * b.shape[-2]) if b.shape[-1] * b.shape[-2] else 0
    return batch * n * n * k


def logsumexp(args: tuple, kwargs: dict, out: Any) -> int:
    return LOGSUMEXP_FLOPS_PER_ELEMENT * _numel(args[:1]) + 2 * _numel(out)


RULES: dict[str, Rule] = {
    "pointwise": pointwise, "reduction": reduction, "softmax": softmax,
    "layer_norm": layer_norm, "group_norm": group_norm, "batch_norm": batch_norm,
    "batch_norm_stats": batch_norm_stats, "batch_norm_given_stats": batch_norm_given_stats,
    "bias_epilogue": bias_epilogue, "conv_bias": conv_bias, "sdpa": sdpa, "zero": zero,
    "scan": reduction, "selection": reduction, "counting": reduction,
    "scatter_accumulate": scatter_accumulate, "scatter_add": scatter_add,
    "scatter_plain": scatter_plain, "index_add": index_add, "index_put": index_put,
    "search": search, "variance": variance, "std": std,
    "logsumexp": logsumexp, "aminmax": aminmax, "vector_norm": vector_norm,
    "pooling": pooling, "solve_triangular": solve_triangular,
}

_POINTWISE = (
    "abs", "add", "sub", "rsub", "mul", "div", "neg", "reciprocal", "pow", "sqrt", "rsqrt",
    "exp", "exp2", "expm1", "log", "log1p", "log2", "sin", "cos", "tan", "erf", "erfc", "erfinv",
    "relu", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "leaky_relu", "elu", "mish",
    "softplus", "hardswish", "hardsigmoid", "clamp", "clamp_min", "clamp_max", "minimum", "maximum",
    "where", "masked_fill", "eq", "ne", "lt", "le", "gt", "ge", "logical_not", "logical_and",
    "logical_or", "bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor", "floor", "ceil",
    "round", "trunc", "sign", "remainder", "fmod", "floor_divide", "lerp", "addcmul", "addcdiv",
    "native_dropout", "isnan", "isinf", "log_sigmoid_forward", "polar", "sgn", "square",
    "xlogy", "special_xlog1py", "logit", "hypot", "atan2", "atan", "asin", "acos", "sinh",
    "cosh", "asinh", "acosh", "atanh", "digamma", "lgamma", "nan_to_num", "heaviside",
    "copysign", "frac", "signbit", "glu", "prelu", "_prelu_kernel", "rrelu_with_noise",
    "celu", "selu", "threshold", "softshrink", "hardshrink", "logaddexp", "isfinite",
)
_REDUCTION = ("sum", "mean", "amax", "amin", "max", "min", "prod", "argmax", "argmin", "any", "all",
              "_is_all_true", "_is_any_true")
_SOFTMAX = ("_softmax", "_log_softmax", "_safe_softmax")
_ZERO = (
    "embedding", "index_select", "gather", "index", "cat", "stack", "masked_select",
    "masked_scatter", "_unique2", "unique_consecutive", "unique_dim",
    "clone", "_to_copy", "copy", "_copy_from", "constant_pad_nd", "repeat", "tril", "triu", "flip",
    "roll", "slice_scatter", "select_scatter", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "new_zeros", "new_ones", "new_full", "scalar_tensor", "arange", "linspace",
    "randn", "rand", "randint", "uniform", "normal", "fill", "zero", "bernoulli", "lift_fresh_copy",
    "_local_scalar_dense", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
    "empty_permuted", "eye", "_assert_async", "_assert_scalar", "sym_constrain_range_for_size",
)

VECTOR_OPS: dict[str, str] = {
    **{f"aten.{n}": "pointwise" for n in _POINTWISE},
    **{f"aten.{n}": "reduction" for n in _REDUCTION},
    **{f"aten.{n}": "softmax" for n in _SOFTMAX},
    **{f"aten.{n}": "zero" for n in _ZERO},
    "aten.native_layer_norm": "layer_norm",
    "aten.native_group_norm": "group_norm",
    "aten.native_batch_norm": "batch_norm",
    "aten._native_batch_norm_legit": "batch_norm_stats",
    "aten._native_batch_norm_legit_no_training": "batch_norm_given_stats",
    "aten.addmm": "bias_epilogue",
    "aten.baddbmm": "bias_epilogue",
    "aten.convolution": "conv_bias",
    "aten._convolution": "conv_bias",
    "aten.scaled_dot_product_attention": "sdpa",
    **{f"aten.{n}": "scan" for n in ("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp")},
    **{f"aten.{n}": "selection" for n in ("sort", "msort", "topk", "kthvalue", "median",
                                          "nanmedian")},
    **{f"aten.{n}": "counting" for n in ("histc", "bincount", "nonzero", "nonzero_static",
                                         "count_nonzero")},
    "aten.scatter_add": "scatter_add", "aten.scatter_reduce": "scatter_accumulate",
    "aten.scatter": "scatter_plain", "aten.index_add": "index_add", "aten.index_put": "index_put",
    "aten._index_put_impl": "index_put",
    "aten.searchsorted": "search", "aten.bucketize": "search",
    "aten.var": "variance", "aten.var_mean": "variance", "aten.std": "std",
    "aten.std_mean": "std", "aten.logsumexp": "logsumexp", "aten.aminmax": "aminmax",
    "aten.linalg_vector_norm": "vector_norm",
    **{f"aten.{n}": "pooling" for n in ("max_pool1d_with_indices", "max_pool2d_with_indices",
                                        "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d",
                                        "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d")},
    "aten.linalg_solve_triangular": "solve_triangular",
}

ALLOC_ONLY = frozenset(f"aten.{n}" for n in (
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"))

METADATA_OPS = frozenset(f"aten.{n}" for n in (
    "_unsafe_view", "_reshape_alias", "size", "sym_size", "stride", "sym_stride", "numel",
    "sym_numel", "dim", "is_contiguous", "sym_is_contiguous", "storage_offset",
    "sym_storage_offset", "is_strides_like_format", "is_non_overlapping_and_dense",
    "resolve_conj", "resolve_neg", "detach_", "as_strided_")) | {"prim.layout", "prim.device"}

WRITE_ONLY_INPLACE = frozenset(f"aten.{n}" for n in (
    "copy_", "fill_", "zero_", "uniform_", "normal_", "random_", "bernoulli_", "exponential_"))


# --- backward ops (training traces, tracing.backward) -------------------------------------------
# Conventions: an activation's backward (threshold_backward, gelu_backward, ...) is pointwise, 1
# per element; softmax backward y * (g - sum(g * y)) is 4 per element; a norm's backward is 8
# per input element for the input gradient, +2 for a weight gradient (multiply, reduce), +1 for a
# bias gradient (reduce), as its output_mask asks (batch norm with given statistics: 2 + ...);
# the embedding backward scatter-adds 1 per gradient element; a convolution's bias gradient
# reduces its grad_output (numel) when asked; a fused attention backward (flash) costs per score
# the recomputed scale + softmax (6, +1 masked) and 3 for the softmax gradient.
SOFTMAX_BACKWARD_FLOPS_PER_ELEMENT = 4
NORM_BACKWARD_FLOPS_PER_ELEMENT = 8
NORM_GIVEN_STATS_BACKWARD_FLOPS_PER_ELEMENT = 2
NORM_WEIGHT_GRAD_FLOPS_PER_ELEMENT = 2
SDPA_BACKWARD_FLOPS_PER_SCORE = 3


def _mask(args: tuple, kwargs: dict, index: int) -> tuple[bool, bool, bool]:
    mask = _arg(args, kwargs, index, "output_mask")
    return tuple(bool(m) for m in mask) if mask is not None else (True, True, True)  # type: ignore


def _norm_backward(numel: int, mask: tuple[bool, bool, bool], per: int) -> int:
    return numel * ((per if mask[0] else 0) + (NORM_WEIGHT_GRAD_FLOPS_PER_ELEMENT if mask[1] else 0)
                    + (1 if mask[2] else 0))


def layer_norm_backward(args: tuple, kwargs: dict, out: Any) -> int:
    """native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias,
    output_mask); weight/bias gradients only when those tensors exist."""
    m = _mask(args, kwargs, 7)
    m = (m[0], m[1] and _affine(args, kwargs, ((5, "weight"),)) > 0,
         m[2] and _affine(args, kwargs, ((6, "bias"),)) > 0)
    return _norm_backward(_numel(args[1:2]), m, NORM_BACKWARD_FLOPS_PER_ELEMENT)


def group_norm_backward(args: tuple, kwargs: dict, out: Any) -> int:
    """native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group, mask)."""
    m = _mask(args, kwargs, 9)
    m = (m[0], m[1] and _affine(args, kwargs, ((4, "weight"),)) > 0, m[2] and m[1])
    return _norm_backward(_numel(args[1:2]), m, NORM_BACKWARD_FLOPS_PER_ELEMENT)


def batch_norm_backward(args: tuple, kwargs: dict, out: Any) -> int:
    """native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean,
    save_invstd, train, eps, output_mask)."""
    m = _mask(args, kwargs, 9)
    has_weight = _affine(args, kwargs, ((2, "weight"),)) > 0
    m = (m[0], m[1] and has_weight, m[2] and has_weight)
    train = _arg(args, kwargs, 7, "train")
    per = (NORM_BACKWARD_FLOPS_PER_ELEMENT if train is not False
           else NORM_GIVEN_STATS_BACKWARD_FLOPS_PER_ELEMENT)
    return _norm_backward(_numel(args[1:2]), m, per)


def softmax_backward(args: tuple, kwargs: dict, out: Any) -> int:
    return SOFTMAX_BACKWARD_FLOPS_PER_ELEMENT * _numel(out)


def grad_output_numel(args: tuple, kwargs: dict, out: Any) -> int:
    """embedding_dense_backward(grad_output, indices, ...): one add per gradient element."""
    return _numel(args[:1])


def conv_backward_bias(args: tuple, kwargs: dict, out: Any) -> int:
    """convolution_backward(grad_output, input, weight, bias_sizes, ..., output_mask)."""
    mask = _arg(args, kwargs, 10, "output_mask")
    return _numel(args[:1]) if mask is not None and mask[2] else 0


def sdpa_flash_backward(args: tuple, kwargs: dict, out: Any) -> int:
    """_scaled_dot_product_flash_attention*_backward(grad_out, query, key, value, out,
    logsumexp, ..., is_causal at 7 (cpu) ...): per score recompute + softmax gradient."""
    q, k = _first(args[1:2]), _first(args[2:3])
    if q is None or k is None or q.ndim < 2:
        return 0
    scores = prod(q.shape[:-1]) * k.shape[-2]
    masked = (_arg(args, kwargs, 8, "attn_mask") is not None
              or bool(_arg(args, kwargs, 7, "is_causal")))
    return scores * (SDPA_FLOPS_PER_SCORE + int(masked) + SDPA_BACKWARD_FLOPS_PER_SCORE)


RULES.update({
    "layer_norm_backward": layer_norm_backward, "group_norm_backward": group_norm_backward,
    "batch_norm_backward": batch_norm_backward, "softmax_backward": softmax_backward,
    "grad_output_numel": grad_output_numel, "conv_backward_bias": conv_backward_bias,
    "sdpa_flash_backward": sdpa_flash_backward,
})
VECTOR_OPS.update({
    **{f"aten.{n}": "pointwise" for n in (
        "threshold_backward", "gelu_backward", "silu_backward", "sigmoid_backward",
        "tanh_backward", "hardtanh_backward", "leaky_relu_backward", "elu_backward",
        "mish_backward", "softplus_backward", "hardswish_backward", "hardsigmoid_backward",
        "native_dropout_backward")},
    "aten._softmax_backward_data": "softmax_backward",
    "aten._log_softmax_backward_data": "softmax_backward",
    "aten.native_layer_norm_backward": "layer_norm_backward",
    "aten.native_group_norm_backward": "group_norm_backward",
    "aten.native_batch_norm_backward": "batch_norm_backward",
    "aten.embedding_dense_backward": "grad_output_numel",
    "aten.convolution_backward": "conv_backward_bias",
    "aten._scaled_dot_product_flash_attention_for_cpu_backward": "sdpa_flash_backward",
})
# --- end of backward ops --------------------------------------------------------------------------


def vector_rule(name: str) -> str | None:
    """Rule name for an op, looking up 'aten.add_' as 'aten.add' when it has no entry itself."""
    rule = VECTOR_OPS.get(name)
    if rule is None and name.endswith("_"):
        rule = VECTOR_OPS.get(name[:-1])
    return rule


def vector_flops(name: str, args: tuple, kwargs: dict, out: Any) -> int:
    """Vector FLOPs of one op from described arguments; 0 for ops without a rule."""
    rule = vector_rule(name)
    return RULES[rule](args, kwargs, out) if rule is not None else 0
