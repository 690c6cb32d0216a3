"""``mitp evaluate``: re-evaluate a run's best checkpoint on a split."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a run's best checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data", help="prepared dataset to evaluate on (default: the run's own)")
    p.add_argument("--batch-size", type=int, help="default: the run's eval batch size")
    p.add_argument("--json", action="store_true", help="print only the metrics object as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from accelerate import Accelerator

    from mitp.data.dataset import ManifestDataset, make_dataloader
    from ..train.inference import load_run
    from ..train.evaluation import evaluate

    loaded = load_run(args.run_dir, args.data)
    config = loaded.config
    dataset = ManifestDataset(config.data, args.split, config.preprocessor(loaded.backbone),
                              on_bad_sample=config.train.on_bad_sample,
                              allow_external_paths=config.allow_external_paths)
    ours, theirs = loaded.labels, dataset.label_space
    if (theirs.task, theirs.labels) != (ours.task, ours.labels):
        from ..cli import UserError

        if theirs.task != ours.task:
            what = f"task {theirs.task} but the run was trained for {ours.task}"
        elif set(theirs.labels) == set(ours.labels):
            what = "the same labels in another order (class indices would be scrambled)"
        else:
            missing = sorted(set(ours.labels) - set(theirs.labels))
            extra = sorted(set(theirs.labels) - set(ours.labels))
            what = f"other labels (missing {missing}, extra {extra})"
        raise UserError(f"{config.data}/labels.json: {what}; cannot evaluate this run on it")
    accelerator = Accelerator(cpu=False)
    loader = make_dataloader(dataset, args.batch_size or config.eval_batch_size(), shuffle=False)
    model, loader = accelerator.prepare(loaded.model, loader)
    result = evaluate(model, loader, accelerator, dataset.task, config.eval.threshold)
    if args.json:
        print(json.dumps(result["metrics"]))
        return 0
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(f"{config.method} on {config.backbone}, {args.split} ({result['samples']} samples): {metrics}  "
          f"loss {result['loss']:.4f}")
    return 0
