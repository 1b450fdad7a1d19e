"""``detpose train stage1|refiner``: train a network on COCO-format keypoint data."""

from __future__ import annotations

import argparse
import logging

import yaml
from pydantic import ValidationError

from jobs.common import literal_choices, number_in
from model.checkpoint import CheckpointError
from model.inference.devices import resolve_device
from model.training.datasets import RefinerDataset, Stage1Dataset, load_coco_keypoints
from model.training.loop import train
from schemas.network_configs import (
    CoarseNetConfig,
    RefinerConfig,
    RefinerPresetName,
    coarse_preset,
    refiner_preset,
)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train CoarsePoseNet (stage1) or the pose refinement sub-net (refiner)",
        description="Train a DetPose network on COCO person-keypoint data. Training resumes from "
        "--out when it holds a checkpoint of the same kind and config.",
    )
    parser.add_argument("network", choices=["stage1", "refiner"], help="which network to train")
    parser.add_argument(
        "--model",
        default="detposenet",
        metavar="NAME",
        help="the registered network to train (default detposenet; `detpose models` says "
        "which are trainable)",
    )
    parser.add_argument(
        "--annotations", action="append", required=True, metavar="JSON",
        help="COCO person_keypoints JSON (path or fsspec URI); repeat with --images for more datasets",
    )  # fmt: skip
    parser.add_argument(
        "--images", action="append", required=True, metavar="URI",
        help="image root of the matching --annotations (file_name is joined onto it)",
    )  # fmt: skip
    parser.add_argument(
        "--config", choices=literal_choices(RefinerPresetName), default="tiny",
        help="size preset; coco-recipe is DetPose's COCO recipe (docs/training.md); "
        "coco-recipe-256x256 and coco-recipe-384x384 are refiner presets with the paper's "
        "square crops",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], type=_config_override, metavar="FIELD=VALUE",
        dest="overrides",
        help="override one config field (VALUE is YAML: 0.3, off, [16, 8, 4]); repeatable. "
        "Fields: schemas/network_configs.py; e.g. --set msr=off --set mask_from=0.5",
    )  # fmt: skip
    parser.add_argument(
        "--out", required=True, metavar="CKPT", help="checkpoint path or fsspec URI"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="total steps (default: the preset's)"
    )
    parser.add_argument(
        "--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda[:N]'"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="override the preset's batch size"
    )
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument(
        "--no-resume", action="store_true", help="start afresh even if --out exists"
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
    parser.add_argument("--log-every", type=int, default=10, help="log mean losses every N steps")
    parser.add_argument(
        "--save-every", type=int, default=200, help="write the checkpoint every N steps"
    )
    parser.add_argument(
        "--loader-workers", type=_loader_workers, default="auto", metavar="N|auto",
        help="single-process training: loader worker processes that load and augment batches "
        "ahead of the step; 0 loads in this process; 'auto' (default): one per CPU core but "
        "one, at most 4 (8 on CUDA)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="train on Ray Train with N data-parallel (DDP) workers fed by a Ray Data stream "
        "of samples; default: one process without Ray (docs/training.md)",
    )  # fmt: skip
    parser.add_argument(
        "--gpus-per-worker", type=float, default=0.0, metavar="G",
        help="with --workers: GPUs per worker (0: CPU workers)",
    )  # fmt: skip
    parser.add_argument(
        "--max-failures", type=int, default=2, metavar="K",
        help="with --workers: worker-group failures to recover from (each resumes from the "
        "last checkpoint)",
    )  # fmt: skip
    parser.add_argument(
        "--num-cpus", type=number_in(int, 1), metavar="N",
        help="with --workers: logical CPUs for a local Ray (default: max(8, 4 x cores); "
        "ignored with RAY_ADDRESS)",
    )  # fmt: skip
    parser.set_defaults(func=run_train)


def _loader_workers(text: str) -> int | str:
    """``--loader-workers``: ``auto`` or an integer >= 0."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"got {text!r}; expected 'auto' or an integer >= 0")
    return int(text)


def _config_override(text: str) -> tuple[str, object]:
    """``--set FIELD=VALUE`` with VALUE parsed as YAML (safe loader)."""
    field, sep, value = text.partition("=")
    if not sep or not field.strip():
        raise argparse.ArgumentTypeError(f"got {text!r}; expected FIELD=VALUE")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"got {text!r}: VALUE is not YAML ({exc})") from exc
    if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
        parsed = value.strip()  # YAML 1.1 reads off/on/no/yes as booleans: msr=off is a name
    return field.strip(), tuple(parsed) if isinstance(parsed, list) else parsed


def training_config(
    network: str, preset: str, overrides: list[tuple[str, object]], batch_size: int | None
) -> CoarseNetConfig | RefinerConfig:
    """The preset's config with ``--set`` overrides and ``--batch-size`` applied.

    Raises:
        ValueError: an unknown preset for the network, an unknown field or an invalid value.
    """
    base = coarse_preset(preset) if network == "stage1" else refiner_preset(preset)  # type: ignore[arg-type]
    changes = dict(overrides)
    if batch_size is not None:
        changes["batch_size"] = batch_size
    try:
        return base.model_validate({**base.model_dump(), **changes})
    except ValidationError as exc:
        raise ValueError(f"--set: invalid {network} config: {exc}") from exc


def run_train(args: argparse.Namespace) -> int:
    """Run ``detpose train``; returns the exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    if len(args.annotations) != len(args.images):
        logger.error(
            "got %d --annotations but %d --images; give one image root per annotation file",
            len(args.annotations), len(args.images),
        )  # fmt: skip
        return 2
    from model.networks import registry
    from model.networks.base import NetworkError

    try:
        adapter = registry.network(args.network, args.model)
    except NetworkError as exc:
        logger.error("%s", exc)
        return 2
    if not adapter.trainable:
        logger.error(
            "%s network %r is not trainable here; `detpose models` lists the trainable ones",
            args.network, args.model,
        )  # fmt: skip
        return 2
    for flag in ("steps", "batch_size", "log_every", "save_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            logger.error(
                "got %d for --%s; expected a positive integer", value, flag.replace("_", "-")
            )
            return 2
    if args.workers is not None:
        return run_train_on_ray(args)
    try:
        device = resolve_device(args.device)
        cfg = training_config(args.network, args.config, args.overrides, args.batch_size)
        records = [
            rec
            for annotations, images in zip(args.annotations, args.images, strict=True)
            for rec in load_coco_keypoints(annotations, images)
        ]
        dataset_type = Stage1Dataset if args.network == "stage1" else RefinerDataset
        dataset = dataset_type(records, cfg, augment=not args.no_augment, seed=args.seed)  # type: ignore[arg-type]
        steps = args.steps if args.steps is not None else cfg.default_steps
        logger.info(
            "training %s (%s) on %d images / %d samples for %d steps on %s",
            args.network, args.config, len(records), len(dataset), steps, device,
        )  # fmt: skip
        described = "; ".join(
            f"{a} (images: {i})" for a, i in zip(args.annotations, args.images, strict=True)
        )
        record = train(
            args.network, cfg, dataset, steps, args.out, device=device, resume=not args.no_resume,
            seed=args.seed, log_every=args.log_every, save_every=args.save_every, data_description=described,
            num_workers=args.loader_workers,
        )  # fmt: skip
    except (OSError, ValueError) as exc:  # CheckpointError is a ValueError
        kind = "checkpoint" if isinstance(exc, CheckpointError) else type(exc).__name__
        logger.error("training failed (%s): %s", kind, exc)
        return 1
    losses = record.get("losses", {})
    logger.info(
        "done: %d steps in %.0f s; loss %.4g -> %.4g; checkpoint %s",
        record["steps"], record["seconds"], record.get("first_losses", {}).get("total", float("nan")),
        losses.get("total", float("nan")), args.out,
    )  # fmt: skip
    return 0


def run_train_on_ray(args: argparse.Namespace) -> int:
    """``detpose train --workers N``: Ray Train DDP workers fed by a Ray Data sample stream
    (``pipeline/training``); storage endpoint and credentials come from the environment, as
    for jobs (docs/spec.md, "S3 and credentials")."""
    from jobs.common import init_ray, quiet_ray_logs
    from pipeline.store.storage import storage_options
    from pipeline.training.trainer import RayTrainPlan, train_on_ray
    from schemas.spec import StorageSpec

    if args.workers < 1 or args.max_failures < 0 or args.gpus_per_worker < 0:
        logger.error("--workers must be >= 1, --max-failures and --gpus-per-worker >= 0")
        return 2
    try:
        cfg = training_config(args.network, args.config, args.overrides, args.batch_size)
        if cfg.batch_size % args.workers:
            raise ValueError(
                f"batch size {cfg.batch_size} does not split evenly over {args.workers} workers"
            )
        storage = StorageSpec()
        records = [
            rec
            for annotations, images in zip(args.annotations, args.images, strict=True)
            for rec in load_coco_keypoints(
                annotations, images, storage_options(annotations, storage)
            )
        ]
        steps = args.steps if args.steps is not None else cfg.default_steps
        plan = RayTrainPlan(
            kind=args.network,
            config=cfg.model_dump(mode="json"),
            steps=steps,
            out=args.out,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            seed=args.seed,
            log_every=args.log_every,
            save_every=args.save_every,
            augment=not args.no_augment,
            resume=not args.no_resume,
            max_failures=args.max_failures,
            data_description="; ".join(
                f"{a} (images: {i})" for a, i in zip(args.annotations, args.images, strict=True)
            ),
            storage_options=storage_options(args.images[0], storage),
        )
        logger.info(
            "training %s (%s) on Ray Train: %d workers, %d images, %d steps of %d samples",
            args.network, args.config, args.workers, len(records), steps, cfg.batch_size,
        )  # fmt: skip
        init_ray(args.num_cpus, None)
        quiet_ray_logs()
        record = train_on_ray(plan, records)
    except (OSError, ValueError) as exc:  # CheckpointError is a ValueError
        kind = "checkpoint" if isinstance(exc, CheckpointError) else type(exc).__name__
        logger.error("training failed (%s): %s", kind, exc)
        return 1
    logger.info(
        "done: %d steps on %d workers in %.0f s; loss %s; checkpoint %s",
        record["steps"], args.workers, record["seconds"], record.get("losses", {}), args.out,
    )  # fmt: skip
    return 0
