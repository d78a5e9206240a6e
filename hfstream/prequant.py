"""Pre-quantized checkpoints: weights stored scaled (``quantization_config``) become float32 nodes.

Big releases ship quantized: DeepSeek-V3's 690 GB are FP8 weights with one float32
``*_scale_inv`` per 128 x 128 block. The reference converter multiplies each weight by its scales
before anything else (``dequant_model``) and converts the product like any float32 tensor, so the
output does not depend on how the source was stored. Here that product is a lazy ``BlockScale``
node in place of the weight (same position in the tensor order, the scale tensor dropped), so a
unit fetches a block of weight rows and the scale rows of those blocks, from whichever shards
hold them. A method hfstream does not convert is refused while planning, before any weight byte
is fetched.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from . import errors
from .graph import BlockScale, Load, Node
from .safetensors import SourceTensor

#: quant_method values the reference converter handles that hfstream does not (yet)
_NOT_YET = ("bitnet", "gptq", "modelopt")
#: compressed-tensors formats whose weights are a tensor times ``weight_scale`` (FP8, int8, naive)
_CT_SCALED = ("float-quantized", "int-quantized", "naive-quantized")


def quant_method(hparams: Mapping[str, Any]) -> str | None:
    """The ``quantization_config.quant_method`` the reference acts on (None: not pre-quantized)."""
    config = hparams.get("quantization_config")
    if not config or not isinstance(config, dict):
        return None
    method = config.get("quant_method")
    return method if method is None else str(method)


def source_nodes(hparams: Mapping[str, Any], sources: Sequence[tuple[str, SourceTensor]]) -> list[tuple[str, Node]]:
    """Every source tensor as the node the family converts, in order: plain loads, except that a
    pre-quantized weight becomes weight x scale and its scale (and activation scales) drop out.

    Raises UnsupportedQuantizationError for a ``quant_method`` hfstream does not convert.
    """
    method = quant_method(hparams)
    if method is None:
        return [(name, Load(src)) for name, src in sources]
    if method == "fp8":
        return _fp8(hparams["quantization_config"], sources)
    if method == "compressed-tensors":
        return _compressed_tensors(hparams["quantization_config"], sources)
    if method in _NOT_YET:
        raise errors.UnsupportedQuantizationError(
            f"config.json: quantization method {method!r} is not supported by hfstream yet (fp8 and "
            "compressed-tensors are)")
    raise errors.UnsupportedQuantizationError(
        f"config.json: quantization method {method!r} is not supported (nor by llama.cpp's converter)")


def _fp8(config: Mapping[str, Any], sources: Sequence[tuple[str, SourceTensor]]) -> list[tuple[str, Node]]:
    """``quant_method: fp8``: ``W_scale_inv`` (and Mistral's ``qscale_weight``) scale ``W`` per block of
    ``weight_block_size`` (per channel or per tensor without it); activation scales are unused."""
    block = _block_size(config.get("weight_block_size"), "quantization_config.weight_block_size")

    def weight_of(name: str) -> str | None:
        if name.endswith("_scale_inv"):
            return name.removesuffix("_scale_inv")
        if name.endswith(".qscale_weight"):
            return name.removesuffix("qscale_weight") + "weight"
        return None

    return _dequantized(sources, weight_of, (".activation_scale", "_activation_scale", ".qscale_act"), block)


def _compressed_tensors(config: Mapping[str, Any], sources: Sequence[tuple[str, SourceTensor]]) -> list[tuple[str, Node]]:
    """``quant_method: compressed-tensors`` (llm-compressor's checkpoints): one config group whose weights
    are FP8 or int8 times ``weight_scale``, per channel or per ``block_structure`` block."""
    fmt = config.get("format")
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or not groups or not all(isinstance(g, dict) for g in groups.values()):
        raise errors.InvalidConfigError("config.json: compressed-tensors quantization_config has no config_groups")
    if fmt == "nvfp4-pack-quantized" or (fmt == "mixed-precision" and all(
            g.get("format") == "nvfp4-pack-quantized" for g in groups.values())):
        raise errors.UnsupportedQuantizationError(
            f"config.json: compressed-tensors format {fmt!r} (NVFP4) is not supported by hfstream yet")
    if len(groups) > 1:
        raise errors.UnsupportedQuantizationError(
            f"config.json: compressed-tensors with {len(groups)} config groups is not supported "
            "(nor by llama.cpp's converter)")
    weights = next(iter(groups.values())).get("weights")
    if not isinstance(weights, dict):
        raise errors.InvalidConfigError("config.json: compressed-tensors config group without 'weights'")
    if fmt == "pack-quantized":
        raise errors.UnsupportedQuantizationError(
            "config.json: compressed-tensors format 'pack-quantized' is not supported by hfstream yet")
    if fmt not in _CT_SCALED:
        raise errors.UnsupportedQuantizationError(
            f"config.json: compressed-tensors format {fmt!r} is not supported (nor by llama.cpp's converter)")
    strategy = weights.get("strategy")
    if strategy not in ("channel", "block") or weights.get("group_size") is not None:
        raise errors.UnsupportedQuantizationError(
            f"config.json: compressed-tensors {fmt} with strategy {strategy!r} and group_size "
            f"{weights.get('group_size')!r} is not supported (nor by llama.cpp's converter)")
    block = _block_size(weights.get("block_structure"), "compressed-tensors block_structure")
    return _dequantized(sources, lambda n: n.removesuffix("_scale") if n.endswith(".weight_scale") else None, (),
                        block)


def _block_size(block: Any, where: str) -> list[int] | None:
    if block is not None and (not isinstance(block, list) or not block
                              or not all(type(b) is int and b > 0 for b in block)):
        raise errors.InvalidConfigError(f"config.json: {where} must be a list of positive integers, not {block!r}")
    return block


def _dequantized(sources: Sequence[tuple[str, SourceTensor]], weight_of: Callable[[str], str | None],
                 unused: tuple[str, ...], block: list[int] | None) -> list[tuple[str, Node]]:
    """The sources with each scale's weight replaced by weight x scale, in place; scales and the
    ``unused`` suffixes dropped."""
    by_name = dict(sources)
    scaled: dict[str, SourceTensor] = {}  # weight name -> its scale
    dropped: set[str] = set()
    for name, _ in sources:
        if unused and name.endswith(unused):
            dropped.add(name)
            continue
        weight = weight_of(name)
        if weight is None:
            continue
        if weight not in by_name:
            raise errors.InvalidHeaderError(f"{by_name[name].file}: scale {name!r} has no weight {weight!r}")
        scaled[weight] = by_name[name]
        dropped.add(name)
    out: list[tuple[str, Node]] = []
    for name, src in sources:
        if name in dropped:
            continue
        if name in scaled:
            scale = scaled[name]
            out.append((name, BlockScale(Load(src), Load(scale), _blocks(name, src, scale, block))))
        else:
            out.append((name, Load(src)))
    return out


def _blocks(name: str, weight: SourceTensor, scale: SourceTensor, block: list[int] | None) -> tuple[int, ...]:
    """The block each scale value covers, one size per weight dimension, as the reference broadcasts:
    with ``weight_block_size`` the scale's last dimensions repeat by it and are cut to the weight;
    without, the scale gets trailing unit dimensions; either way a dimension of 1 is broadcast."""
    shape, have = weight.shape, scale.shape
    if block is not None and len(have) == len(shape) >= len(block):
        blocks = [1] * (len(shape) - len(block)) + list(block)
    elif block is None and len(have) <= len(shape):
        have = have + (1,) * (len(shape) - len(have))
        blocks = [1] * len(shape)
    else:
        blocks = None
    if blocks is not None and shape:
        # an unrepeated scale dimension of 1 broadcasts over the whole weight dimension
        blocks = [max(d, 1) if s == 1 and b == 1 else b for d, s, b in zip(shape, have, blocks)]
        if all(s == -(-d // b) for d, s, b in zip(shape, have, blocks)):
            return tuple(blocks)
    size = f" with weight_block_size {block}" if block is not None else ""
    raise errors.ConfigMismatchError(
        f"{scale.file}: scale {scale.name!r} has shape {list(scale.shape)}, which does not fit weight "
        f"{name!r} of shape {list(shape)}{size}")
