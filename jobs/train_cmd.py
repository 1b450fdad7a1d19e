"""``detpose train stage1|refiner``: train a network on COCO-format keypoint data."""

from __future__ import annotations

import argparse
import logging

import yaml

from jobs.common import literal_choices, number_in
from model.checkpoint import CheckpointError
from model.inference.devices import resolve_device
from model.training.datasets import load_coco_keypoints
from model.training.loop import train
from model.training.recipe import TrainingConfig, TrainingRecipe
from pipeline.store.storage import storage_options
from pipeline.training.labels import DEFAULT_PSEUDO_LABEL_SCORE, Labels, is_review_file, labels_from
from schemas.network_configs import TrainPresetName
from schemas.spec import StorageSpec

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train CoarsePoseNet (stage1) or the pose refinement sub-net (refiner)",
        description="Train a DetPose network on COCO person-keypoint data. Training resumes from "
        "--out when it holds a checkpoint of the same kind and config.",
    )
    parser.add_argument(
        "network", choices=["stage1", "refiner"], help="which stage's network to train"
    )
    parser.add_argument(
        "--model",
        default="detposenet",
        metavar="NAME",
        help="the registered network to train (default detposenet; `detpose models` says "
        "which are trainable)",
    )
    parser.add_argument(
        "--annotations", action="append", default=[], metavar="JSON",
        help="COCO person_keypoints JSON (path or fsspec URI); repeat with --images for more datasets",
    )  # fmt: skip
    parser.add_argument(
        "--images", action="append", default=[], metavar="URI",
        help="image root of the matching --annotations (file_name is joined onto it), or of a "
        "--labels review file",
    )  # fmt: skip
    parser.add_argument(
        "--labels", metavar="URI",
        help="train on the project's own outputs: a job folder (OUTPUT/JOB_ID; its poses "
        "scoring at least --min-score are pseudo-labels) or a reviewed COCO file from "
        "`detpose import`; adds to --annotations",
    )  # fmt: skip
    parser.add_argument(
        "--min-score", type=float, default=DEFAULT_PSEUDO_LABEL_SCORE, metavar="S",
        help="--labels of a job: persons and keypoints scoring below S are not labels "
        f"(default {DEFAULT_PSEUDO_LABEL_SCORE})",
    )  # fmt: skip
    parser.add_argument(
        "--init", metavar="CKPT",
        help="start from this checkpoint of the network (fine-tuning; DetPoseNet keeps its "
        "config, --set on top); default: random weights for DetPoseNet, the released weights "
        "for a zoo network",
    )  # fmt: skip
    parser.add_argument(
        "--config", choices=literal_choices(TrainPresetName), default=None,
        help="preset; DetPoseNet: tiny (default), coco-recipe (DetPose's COCO recipe, "
        "docs/training.md), coco-recipe-256x256 and coco-recipe-384x384 (refiner, the paper's "
        "square crops); zoo MoveNet: fine-tune (default)",
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
    network: str,
    preset: str | None,
    overrides: list[tuple[str, object]],
    batch_size: int | None,
    model: str = "detposenet",
    init: str | None = None,
) -> TrainingConfig:
    """The config ``detpose train`` trains ``model`` with: its preset (None: the network's
    default, or with ``init`` that checkpoint's own), ``--set`` overrides and
    ``--batch-size`` applied.

    Raises:
        ValueError: an untrainable network, a preset it does not take, an unknown field or an
            invalid value.
    """
    return _recipe(network, model, init).config(preset, dict(overrides), batch_size)


def _recipe(network: str, model: str, init: str | None) -> TrainingRecipe:
    from model.networks import registry

    recipe = registry.network(network, model).training(init)
    if recipe is None:
        raise ValueError(
            f"{network} network {model!r} is not trainable here; `detpose models` lists the "
            "trainable ones"
        )
    return recipe


def _labels(args: argparse.Namespace, storage: StorageSpec) -> Labels:
    """The training records of ``--annotations``/``--images`` pairs and ``--labels``."""
    pairs = zip(args.annotations, args.images, strict=True) if args.annotations else ()
    found = [
        Labels(
            load_coco_keypoints(annotations, images, storage_options(annotations, storage)),
            f"{annotations} (images: {images})",
        )
        for annotations, images in pairs
    ]
    if args.labels is not None:
        root = args.images[0] if args.images and not args.annotations else None
        found.append(labels_from(args.labels, root, args.min_score, storage))
    return Labels([r for labels in found for r in labels.records], "; ".join(
        labels.description for labels in found
    ))  # fmt: skip


def _check_data_flags(args: argparse.Namespace) -> str | None:
    """What is wrong with the data flags, or None."""
    if args.labels is None and not args.annotations:
        return "give --annotations JSON --images URI, or --labels (a job folder or a review file)"
    if args.annotations and len(args.annotations) != len(args.images):
        return (
            f"got {len(args.annotations)} --annotations but {len(args.images)} --images; give "
            "one image root per annotation file"
        )
    if not args.annotations and len(args.images) > 1:
        return "--labels takes at most one --images (the review file's image root)"
    if (
        args.labels is not None
        and not is_review_file(args.labels)
        and args.images
        and not (args.annotations)
    ):
        return "--images applies to a review file; a job folder's labels name their images"
    if not 0.0 <= args.min_score <= 1.0:
        return f"got --min-score {args.min_score}; expected a score in [0, 1]"
    return None


def run_train(args: argparse.Namespace) -> int:
    """Run ``detpose train``; returns the exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    problem = _check_data_flags(args)
    if problem:
        logger.error("%s", problem)
        return 2
    for flag in ("steps", "batch_size", "log_every", "save_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            logger.error(
                "got %d for --%s; expected a positive integer", value, flag.replace("_", "-")
            )
            return 2
    from model.networks.base import NetworkError

    try:
        recipe = _recipe(args.network, args.model, args.init)
        cfg = recipe.config(args.config, dict(args.overrides), args.batch_size)
    except (NetworkError, CheckpointError, OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    if args.workers is not None:
        return run_train_on_ray(args, recipe, cfg)
    try:
        device = resolve_device(args.device)
        labels = _labels(args, StorageSpec())
        dataset = recipe.dataset(labels.records, cfg, not args.no_augment, args.seed)
        steps = args.steps if args.steps is not None else cfg.default_steps
        logger.info(
            "training %s %s (%s) on %d images / %d samples for %d steps on %s",
            args.network, args.model, args.config or "default", len(labels.records),
            len(dataset), steps, device,
        )  # fmt: skip
        record = train(
            recipe, cfg, dataset, steps, args.out, device=device, resume=not args.no_resume,
            seed=args.seed, log_every=args.log_every, save_every=args.save_every,
            data_description=labels.description, num_workers=args.loader_workers,
        )  # fmt: skip
    except (OSError, ValueError) as exc:  # CheckpointError and FormatError are ValueErrors
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


def run_train_on_ray(args: argparse.Namespace, recipe: TrainingRecipe, cfg: TrainingConfig) -> int:
    """``detpose train --workers N``: Ray Train DDP workers fed by a Ray Data sample stream
    (``pipeline/training``); storage endpoint and credentials come from the environment, as
    for jobs (docs/spec.md, "S3 and credentials")."""
    from jobs.common import init_ray, quiet_ray_logs
    from pipeline.training.trainer import RayTrainPlan, train_on_ray

    if args.workers < 1 or args.max_failures < 0 or args.gpus_per_worker < 0:
        logger.error("--workers must be >= 1, --max-failures and --gpus-per-worker >= 0")
        return 2
    try:
        if cfg.batch_size % args.workers:
            raise ValueError(
                f"batch size {cfg.batch_size} does not split evenly over {args.workers} workers"
            )
        storage = StorageSpec()
        labels = _labels(args, storage)
        steps = args.steps if args.steps is not None else cfg.default_steps
        first_image = labels.records[0].uri if labels.records else args.out
        plan = RayTrainPlan(
            recipe=recipe,
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
            data_description=labels.description,
            storage_options=storage_options(first_image, storage),
        )
        logger.info(
            "training %s %s on Ray Train: %d workers, %d images, %d steps of %d samples",
            args.network, args.model, args.workers, len(labels.records), steps, cfg.batch_size,
        )  # fmt: skip
        init_ray(args.num_cpus, None)
        quiet_ray_logs()
        record = train_on_ray(plan, labels.records)
    except (OSError, ValueError) as exc:  # CheckpointError is a ValueError
        kind = "checkpoint" if isinstance(exc, CheckpointError) else type(exc).__name__
        logger.error("training failed (%s): %s", kind, exc)
        return 1
    logger.info(
        "done: %d steps on %d workers in %.0f s; loss %s; checkpoint %s",
        record["steps"], args.workers, record["seconds"], record.get("losses", {}), args.out,
    )  # fmt: skip
    return 0
