"""Losses of both networks (paper eqs. 1-2 and the stage-1 proposal loss L_p).

Notation: ``B`` batch, ``K = 17`` keypoints, heatmaps ``[B, K, H, W]``, visibility weights
``[B, K]`` (1 for a labelled keypoint, 0 otherwise). The paper's ``||K_n - K~_n||_2`` is taken,
as in the hourglass papers it builds on, as the mean squared error over the heatmap's pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.keypoints import LIMB_TRIPLETS, NUM_KEYPOINTS, SKELETON
from schemas.network_configs import CoarseNetConfig, RefinerConfig

# CenterNet's penalty-reduced focal loss exponents.
_FOCAL_ALPHA = 2.0
_FOCAL_BETA = 4.0


def skeleton_neighbours(
    skeleton: Sequence[tuple[int, int]] = SKELETON, num_keypoints: int = NUM_KEYPOINTS
) -> tuple[tuple[int, ...], ...]:
    """Each keypoint's neighbouring keypoints on the skeleton graph (``structure_loss: neighbours``).

    The neighbour terms then add other keypoints' own errors, which amounts to weighting each
    keypoint by its degree (a shoulder counts 3x, a wrist 1.5x at alpha2 = 0.5): DetPose's
    reading of eq. 2 before association channels existed, kept selectable.

    Returns:
        ``num_keypoints`` sorted tuples of keypoint indices.
    """
    neighbours: list[set[int]] = [set() for _ in range(num_keypoints)]
    for a, b in skeleton:
        neighbours[a].add(b)
        neighbours[b].add(a)
    return tuple(tuple(sorted(n)) for n in neighbours)


def association_neighbours(
    pairs: Sequence[tuple[int, ...]] = SKELETON,
    triplets: Sequence[tuple[int, ...]] = LIMB_TRIPLETS,
    num_keypoints: int = NUM_KEYPOINTS,
) -> tuple[tuple[int, ...], ...]:
    """``N(n)`` of eq. 2 over the ``M*`` heatmap channels (paper §III-C3, Fig. 7).

    Channels ``0 .. M-1`` are the keypoints, ``M + e`` the pair ``pairs[e]``, ``M + E + t`` the
    triplet ``triplets[t]`` (see :func:`model.codecs.targets.association_heatmaps`). A keypoint's
    neighbours are the association channels of the pairs it belongs to, plus, for the middle
    joint of a triplet (an elbow or knee), that triplet: the three-way term.

    Returns:
        ``num_keypoints`` sorted tuples of channel indices.
    """
    neighbours: list[set[int]] = [set() for _ in range(num_keypoints)]
    for e, pair in enumerate(pairs):
        for n in pair:
            neighbours[n].add(num_keypoints + e)
    for t, (_, middle, _) in enumerate(triplets):
        neighbours[middle].add(num_keypoints + len(pairs) + t)
    return tuple(tuple(sorted(n)) for n in neighbours)


@functools.lru_cache(maxsize=4)
def structure_neighbours(structure_loss: str) -> tuple[tuple[int, ...], ...]:
    """``N(n)`` for a ``RefinerConfig.structure_loss`` mode (empty for ``'keypoints'``)."""
    if structure_loss == "associations":
        return association_neighbours()
    if structure_loss == "neighbours":
        return skeleton_neighbours()
    if structure_loss == "keypoints":
        return tuple(() for _ in range(NUM_KEYPOINTS))
    raise ValueError(
        f"got {structure_loss!r} for structure_loss; expected 'associations', 'neighbours' or "
        "'keypoints'"
    )


@functools.lru_cache(maxsize=32)
def _neighbour_matrix(
    neighbours: tuple[tuple[int, ...], ...], num_channels: int, device: torch.device
) -> torch.Tensor:
    """``[M, M*]`` with entry ``(n, c)`` = 1 when channel ``c`` is in ``N(n)``.

    Cached: every scale of every stack of every step asks for the same few matrices.
    """
    mat = torch.zeros((len(neighbours), num_channels), device=device)
    for n, ns in enumerate(neighbours):
        mat[n, list(ns)] = 1.0
    return mat


def per_keypoint_l2(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-channel heatmap error: pixel-mean squared error times the channel's weight.

    Args:
        pred: ``[B, C, H, W]``.
        target: ``[B, C, H, W]``.
        weight: ``[B, C]``.

    Returns:
        ``[B, C]``.
    """
    return ((pred.float() - target.float()) ** 2).mean(dim=(2, 3)) * weight.float()


def structure_aware_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    alpha2: float,
    neighbours: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Eq. 2: ``1/M sum_n (d_n + alpha2 * sum_{n' in N(n)} d_n')``, averaged over the batch.

    ``d_c`` is :func:`per_keypoint_l2` of channel ``c``; the sum runs over the ``M`` keypoints
    (``len(neighbours)``), whose neighbours may be any of the ``M*`` channels (association
    channels: :func:`association_neighbours`). With ``alpha2 = 0`` this is the mean L2 of the
    keypoint channels.

    Args:
        pred: ``[B, M*, H, W]`` predicted heatmaps.
        target: ``[B, M*, H, W]`` ground-truth heatmaps.
        weight: ``[B, M*]`` channel weights (visibility; a chain's weight for associations).
        alpha2: weight of the neighbour terms.
        neighbours: ``N(n)`` for each of the ``M`` keypoints; default
            :func:`skeleton_neighbours` (then ``M* = M``).

    Returns:
        Scalar loss.
    """
    d = per_keypoint_l2(pred, target, weight)  # [B, M*]
    num_keypoints = len(neighbours) if neighbours is not None else d.shape[1]
    keypoint_terms = d[:, :num_keypoints]
    if alpha2 == 0.0:
        return keypoint_terms.mean()
    if neighbours is None:
        neighbours = skeleton_neighbours(num_keypoints=d.shape[1])
    if num_keypoints > d.shape[1] or any(c >= d.shape[1] for ns in neighbours for c in ns):
        raise ValueError(
            f"[internal] {d.shape[1]} heatmap channels do not hold {num_keypoints} keypoints "
            "and their neighbour channels"
        )
    matrix = _neighbour_matrix(tuple(map(tuple, neighbours)), d.shape[1], d.device)
    neighbour_sum = d @ matrix.T  # [B, M]: sum_{n' in N(n)} d_n'
    return (keypoint_terms + alpha2 * neighbour_sum).mean()


def multiscale_loss(
    preds: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    weight: torch.Tensor,
    alpha2: float,
    neighbours: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Eq. 1: ``L_MSS = 1/S sum_s L_SA(K^(s), K~^(s))`` over ``S`` matched scales.

    Args:
        preds: ``S`` predicted heatmaps ``[B, M*, H_s, W_s]``.
        targets: ``S`` targets of the same shapes.
        weight: ``[B, M*]`` channel weights (the same at every scale).
        alpha2: eq. 2's neighbour weight.
        neighbours: eq. 2's ``N(n)`` (see :func:`structure_aware_loss`).

    Returns:
        Scalar loss.
    """
    if len(preds) != len(targets) or not preds:
        raise ValueError(
            f"[internal] {len(preds)} predicted scales for {len(targets)} target scales"
        )
    losses = [
        structure_aware_loss(p, t, weight, alpha2, neighbours)
        for p, t in zip(preds, targets, strict=True)
    ]
    return torch.stack(losses).mean()


def refiner_loss(
    scale_heatmaps: Sequence[torch.Tensor],
    msr_heatmaps: Sequence[torch.Tensor],
    scale_targets: Sequence[torch.Tensor],
    weight: torch.Tensor,
    alpha2: float,
    neighbours: Sequence[Sequence[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """PRS loss: L_MSS of every stack (intermediate supervision) plus the MSR's loss.

    The MSR's heatmaps are matched to the targets of their scales, ``sum_s L_SA``: all ``S`` of
    them (``msr: multiscale``), the final one (``final``), or none (``off``: the term is 0).

    Args:
        scale_heatmaps: stack-major, coarse-to-fine MSS heatmaps (``RefinerOutput.scale_heatmaps``).
        msr_heatmaps: the MSR's heatmaps, coarse to fine (``RefinerOutput.msr_heatmaps``).
        scale_targets: ``S`` targets ``[B, M*, H_s, W_s]``, coarse to fine.
        weight: ``[B, M*]``.
        alpha2: eq. 2's neighbour weight.
        neighbours: eq. 2's ``N(n)`` (see :func:`structure_aware_loss`).

    Returns:
        ``{"mss", "msr", "total"}`` scalars; ``total = mean over stacks of L_MSS + MSR term``.

    Raises:
        ValueError: ``[internal]`` the heatmaps are not whole stacks of the targets' scales.
    """
    num_scales = len(scale_targets)
    if num_scales == 0 or len(scale_heatmaps) % num_scales:
        raise ValueError(
            f"[internal] {len(scale_heatmaps)} scale heatmaps are not whole stacks of {num_scales}"
        )
    stacks = [scale_heatmaps[i : i + num_scales] for i in range(0, len(scale_heatmaps), num_scales)]
    mss = torch.stack(
        [multiscale_loss(s, scale_targets, weight, alpha2, neighbours) for s in stacks]
    ).mean()
    if len(msr_heatmaps) not in (0, 1, num_scales):
        raise ValueError(
            f"[internal] {len(msr_heatmaps)} MSR outputs for {num_scales} supervised scales"
        )
    # Summed over the MSR's scales, not averaged as eq. 1 averages the MSS's: the final
    # scale keeps the full weight a single-output regression has and the coarser scales add
    # their own matching terms (the paper does not weight them; averaging halved the tiny
    # refiner's convergence on its training keypoints, docs/models.md).
    targets = scale_targets[num_scales - len(msr_heatmaps) :]
    msr = sum(
        (
            structure_aware_loss(p, t, weight, alpha2, neighbours)
            for p, t in zip(msr_heatmaps, targets, strict=True)
        ),
        torch.zeros((), device=mss.device),
    )
    return {"mss": mss, "msr": msr, "total": mss + msr}


def focal_loss(
    centre_logits: torch.Tensor,
    centre_target: torch.Tensor,
    neg_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on centre heatmaps, normalised by the box count.

    Args:
        centre_logits: ``[B, 1, h, w]`` logits.
        centre_target: ``[B, 1, h, w]`` Gaussian targets, exactly 1 at box centres.
        neg_weight: optional ``[B, 1, h, w]`` weight of the negative (non-centre) terms, 0 where
            they do not count (crowd regions); ``None``: 1 everywhere. Positive terms are never
            weighted, and the normaliser stays the box count, so masking negatives only removes
            terms and never rescales the others.

    Returns:
        Scalar loss.
    """
    logits = centre_logits.float()
    prob = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    is_centre = (centre_target >= 1.0).float()
    pos = is_centre * (1 - prob) ** _FOCAL_ALPHA * log_p
    neg = (1 - is_centre) * (1 - centre_target) ** _FOCAL_BETA * prob**_FOCAL_ALPHA * log_not_p
    if neg_weight is not None:
        neg = neg * _pixel_weight(neg_weight, neg)
    return -(pos.sum() + neg.sum()) / is_centre.sum().clamp(min=1.0)


def _pixel_weight(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``weight [B, 1, h, w]`` as float32, checked against ``like [B, C, h, w]``."""
    batch, _, height, width = like.shape
    if weight.shape != (batch, 1, height, width):
        raise ValueError(
            f"[internal] pixel weight of shape {tuple(weight.shape)} for maps of shape "
            f"{tuple(like.shape)}; expected {(batch, 1, height, width)}"
        )
    return weight.float()


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared error averaged over channels and the pixels that count (Cao et al.'s L2 loss).

    Normalised by the number of valid pixels, so ignoring part of the maps keeps the loss a
    mean per valid pixel (its scale does not shrink with the ignored area) and all-ones
    weights give the plain mean.

    Args:
        pred: ``[B, C, h, w]``.
        target: ``[B, C, h, w]``.
        weight: optional ``[B, 1, h, w]`` pixel weights shared by the channels (1 = train,
            0 = ignore); ``None``: every pixel counts.

    Returns:
        Scalar ``sum(weight * (pred - target)^2) / (C * sum(weight))``; 0 when no pixel counts.
    """
    err = (pred.float() - target.float()) ** 2
    if weight is None:
        return err.mean()
    weight = _pixel_weight(weight, err)
    return (err * weight).sum() / (weight.sum().clamp(min=1.0) * err.shape[1])


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 on the cells where ``mask`` is 1 (``pred, target: [B, C, h, w]``, ``mask: [B, 1, h, w]``),
    summed over channels and averaged over masked cells."""
    err = (pred.float() - target.float()).abs() * mask
    return err.sum() / mask.sum().clamp(min=1.0)


def detection_loss(
    centre_logits: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    targets: dict[str, torch.Tensor],
    size_weight: float,
    offset_weight: float,
) -> dict[str, torch.Tensor]:
    """L_det: focal loss on centres plus weighted L1 on size and offset at centre cells.

    Args:
        centre_logits, size, offset: network outputs (see :class:`model.nets.coarse_net.CoarseNetOutput`).
        targets: ``centre``, ``size``, ``offset``, ``reg_mask`` batched like
            :class:`model.codecs.detection.DetectionTargets`; optional ``det_weight``
            ``[B, 1, h, w]``, the centre negatives' weight (:func:`focal_loss`; absent: 1).
        size_weight, offset_weight: weights of the L1 terms.

    Returns:
        ``{"centre", "size", "offset", "det"}`` scalars.
    """
    centre = focal_loss(centre_logits, targets["centre"], targets.get("det_weight"))
    size_l1 = masked_l1(size, targets["size"], targets["reg_mask"])
    offset_l1 = masked_l1(offset, targets["offset"], targets["reg_mask"])
    det = centre + size_weight * size_l1 + offset_weight * offset_l1
    return {"centre": centre, "size": size_l1, "offset": offset_l1, "det": det}


def proposal_loss(
    stack_heatmaps: Sequence[torch.Tensor],
    stack_pafs: Sequence[torch.Tensor],
    centre_logits: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    targets: dict[str, torch.Tensor],
    det_weight: float,
    heatmap_weight: float,
    paf_weight: float,
    size_weight: float,
    offset_weight: float,
) -> dict[str, torch.Tensor]:
    """Stage-1 loss ``L_p = det_weight * L_det + L_kpt``.

    ``L_kpt`` averages over stacks ``heatmap_weight * MSE(heatmaps) + paf_weight * MSE(PAFs)``,
    both :func:`masked_mse` over the pixels where ``kpt_weight`` is 1.

    Args:
        stack_heatmaps: per stack ``[B, 17, h, w]``.
        stack_pafs: per stack ``[B, 38, h, w]``.
        centre_logits, size, offset: detection outputs.
        targets: ``heatmaps``, ``pafs`` and the detection targets of :func:`detection_loss`
            (with the optional ``det_weight``); optional ``kpt_weight [B, 1, h, w]``, 0 where
            heatmaps and PAFs are not trained (crowds, people without keypoints; absent: 1).
        det_weight, heatmap_weight, paf_weight, size_weight, offset_weight: loss weights.

    Returns:
        ``{"centre", "size", "offset", "det", "heatmap", "paf", "kpt", "total"}`` scalars.
    """
    det = detection_loss(centre_logits, size, offset, targets, size_weight, offset_weight)
    kpt_weight = targets.get("kpt_weight")
    heatmap = torch.stack(
        [masked_mse(h, targets["heatmaps"], kpt_weight) for h in stack_heatmaps]
    ).mean()
    paf = torch.stack([masked_mse(p, targets["pafs"], kpt_weight) for p in stack_pafs]).mean()
    kpt = heatmap_weight * heatmap + paf_weight * paf
    return {
        **det,
        "heatmap": heatmap,
        "paf": paf,
        "kpt": kpt,
        "total": det_weight * det["det"] + kpt,
    }


def stage1_losses(
    model: nn.Module, batch: dict[str, torch.Tensor], cfg: CoarseNetConfig
) -> dict[str, torch.Tensor]:
    """Forward a stage-1 batch (see :class:`model.training.datasets.Stage1Dataset`) and return L_p's terms."""
    out = model(batch["image"])
    return proposal_loss(
        out.stack_heatmaps,
        out.stack_pafs,
        out.centre_logits,
        out.size,
        out.offset,
        batch,
        det_weight=cfg.det_loss_weight,
        heatmap_weight=cfg.heatmap_loss_weight,
        paf_weight=cfg.paf_loss_weight,
        size_weight=cfg.size_loss_weight,
        offset_weight=cfg.offset_loss_weight,
    )


def refiner_losses(
    model: nn.Module, batch: dict[str, torch.Tensor], cfg: RefinerConfig
) -> dict[str, torch.Tensor]:
    """Forward a refiner batch (see :class:`model.training.datasets.RefinerDataset`) and return its loss terms."""
    out = model(batch["crop"])
    targets = [batch[f"heatmaps_s{s}"] for s in cfg.supervision_strides]
    return refiner_loss(
        out.scale_heatmaps,
        out.msr_heatmaps,
        targets,
        batch["weight"],
        cfg.alpha2,
        structure_neighbours(cfg.structure_loss),
    )
