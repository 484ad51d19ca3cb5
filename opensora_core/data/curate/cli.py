"""Subcommands of ``python -m opensora_core.data.prepare``: ``probe`` (also the default) and the curation stages.

python -m opensora_core.data.prepare probe RAW -o meta.csv
python -m opensora_core.data.prepare split-scenes meta.csv -o clips.csv --clip-dir clips/ --min-seconds 2
python -m opensora_core.data.prepare score clips.csv -o scored.csv [--aesthetic-clip M --aesthetic-head H.pth]
    [--text-match-clip M] [--text]
python -m opensora_core.data.prepare filter scored.csv -o kept.csv --config filter.json
python -m opensora_core.data.prepare caption kept.csv -o captioned.csv [--captions captions.csv] [--model M]
python -m opensora_core.data.prepare dedup captioned.csv -o deduped.csv
python -m opensora_core.data.prepare holdout deduped.csv -o train.csv --eval-fraction 0.1 [--eval-output eval.csv]
python -m opensora_core.data.prepare report train.csv --out-dir report/ [--bucket-config buckets.json]
python -m opensora_core.data.prepare curate RAW --root curated/ --shards 8 --workers 4 [--config curate.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opensora_core.data.prepare import OutputExistsError

STAGES = ("split-scenes", "score", "filter", "caption", "dedup", "holdout", "report", "curate")


def _json_or_file(text: str) -> Any:
    path = Path(text)
    return json.loads(path.read_text() if path.is_file() else text)


def build_parser() -> argparse.ArgumentParser:
    """The stage subcommands (``probe`` is parsed by :func:`opensora_core.data.prepare.main`)."""
    parser = argparse.ArgumentParser(
        prog="python -m opensora_core.data.prepare", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="stage", required=True)

    def stage(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("input", help="input table (.csv/.parquet, local or s3://)")
        if name not in ("report", "curate"):
            p.add_argument(
                "--output", "-o", required=True, help="output table (.csv/.parquet, local or s3://)"
            )
            p.add_argument(
                "--overwrite", action="store_true", help="replace an output another run wrote (backup kept)"
            )
        return p

    p = stage("split-scenes", "cut videos into scene clips")
    p.add_argument("--clip-dir", required=True, help="folder for the clips (local or s3://)")
    p.add_argument("--threshold", type=float, default=27.0)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--skip-edge-frames", type=int, default=0)
    p.add_argument("--reencode", action="store_true", help="always re-encode (no stream copy)")
    p.add_argument("--workers", type=int, default=1)
    p = stage("score", "add motion / aesthetic / text_match / text_area score columns")
    p.add_argument("--no-motion", action="store_true")
    p.add_argument(
        "--aesthetic-clip", help="CLIP model folder or hub id (e.g. openai/clip-vit-large-patch14)"
    )
    p.add_argument("--aesthetic-head", help="LAION aesthetic head state dict (.pth/.safetensors)")
    p.add_argument(
        "--text-match-clip", help="CLIP model folder or hub id: text_match = CLIPScore of frames vs caption"
    )
    p.add_argument(
        "--text", action="store_true", help="text_area = share of the frame burned-in text covers (rapidocr)"
    )
    p.add_argument("--text-size", type=int, default=640, help="longer frame side (px) for --text")
    p.add_argument(
        "--frames", type=int, default=3, help="frames sampled per clip for the CLIP and text scores"
    )
    p.add_argument("--workers", type=int, default=1)
    p = stage("filter", "drop rows outside thresholds")
    p.add_argument("--config", required=True, type=_json_or_file, help="FilterConfig as JSON or a JSON file")
    p = stage("caption", "fill, clean and check captions")
    p.add_argument("--captions", help="captions table (path,text)")
    p.add_argument("--min-words", type=int, default=1)
    p.add_argument("--max-words", type=int, default=200)
    p.add_argument("--model", help="generate missing captions: image-text-to-text model folder or hub id")
    p.add_argument("--prompt", help="generation prompt (default: a describe-the-video chat turn, or none)")
    p.add_argument("--frames", type=int, default=3, help="frames per clip, tiled into one image")
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8, help="clips per generation call")
    p = stage("dedup", "drop exact and near duplicates")
    p.add_argument("--exact-only", action="store_true")
    p.add_argument("--max-distance", type=int, default=6)
    p = stage("holdout", "train / held-out split by a hash of the clip path")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="share of the clips held out, in [0, 1)")
    p.add_argument("--eval-output", help="held-out table (default: OUTPUT's stem + .eval + its extension)")
    p.add_argument("--salt", default="", help="prefix hashed with each key (another salt, another split)")
    p.add_argument(
        "--by-source", action="store_true", help="hash source_path: all clips of one video on one side"
    )
    p = stage("report", "histograms and bucket counts of a table")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--bucket-config", type=_json_or_file, help="bucket_config as JSON or a JSON file")
    p.add_argument("--frame-interval", type=int, default=1)
    p = stage("curate", "every stage, sharded: plan -> shards (worker processes) -> merge + report")
    p.add_argument(
        "--root", required=True, help="dataset root for shards, train.csv and report/ (re-runs reuse it)"
    )
    p.add_argument(
        "--config", type=_json_or_file, help="CurateConfig as JSON or a JSON file (default: defaults)"
    )
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--tracking-uri", help="log the dataset run to this MLflow tracking URI")
    p.add_argument("--experiment", default="opensora-data")
    return parser


def run_stage(args: argparse.Namespace) -> Any:
    """Run the stage ``args.stage``; returns its report."""
    from opensora_core.data.curate import captions, dedup, filter, holdout, report, scenes, scores

    if args.stage == "split-scenes":
        cfg = scenes.SceneSplitConfig(
            threshold=args.threshold,
            min_clip_seconds=args.min_seconds,
            max_clip_seconds=args.max_seconds,
            skip_edge_frames=args.skip_edge_frames,
            stream_copy=not args.reencode,
        )
        return scenes.split_scenes(args.input, args.output, args.clip_dir, cfg, args.workers, args.overwrite)
    if args.stage == "score":
        return scores.score(
            args.input,
            args.output,
            not args.no_motion,
            args.aesthetic_clip,
            args.aesthetic_head,
            args.frames,
            args.workers,
            args.overwrite,
            text_match_clip=args.text_match_clip,
            text=args.text,
            text_size=args.text_size,
        )
    if args.stage == "filter":
        return filter.filter_table(args.input, args.output, args.config, args.overwrite)
    if args.stage == "caption":
        return captions.caption(
            args.input,
            args.output,
            args.captions,
            args.min_words,
            args.max_words,
            args.overwrite,
            model=args.model,
            prompt=args.prompt,
            num_frames=args.frames,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
    if args.stage == "dedup":
        return dedup.dedup(
            args.input, args.output, not args.exact_only, args.max_distance, overwrite=args.overwrite
        )
    if args.stage == "holdout":
        return holdout.holdout(
            args.input,
            args.output,
            args.eval_fraction,
            args.eval_output,
            args.salt,
            args.by_source,
            args.overwrite,
        )
    if args.stage == "report":
        return report.dataset_report(args.input, args.out_dir, args.bucket_config, args.frame_interval)
    from opensora_core.data.curate.merge import run_curation

    result = run_curation(args.input, args.root, args.config, args.shards, args.workers)
    if args.tracking_uri:
        from opensora_core.io.dataset_run import log_dataset_run

        result["mlflow_run_id"] = log_dataset_run(result, args.tracking_uri, args.experiment)
    return {k: v for k, v in result.items() if k not in ("dropped", "dataset")}


def main(argv: Sequence[str]) -> int:
    """Parse and run one stage; exit status 1 with the error for bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = run_stage(args)
    except (OutputExistsError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result if args.stage not in ("report", "curate") else json.dumps(result, indent=2, default=str))
    return 0
