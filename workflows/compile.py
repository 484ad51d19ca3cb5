"""Compile the pipeline presets to ``workflows/<preset>.yaml`` and the curation pipeline to
``workflows/curate.yaml``: ``python -m workflows.compile [--check]``.

``--check`` compiles into memory and exits 1 (listing the files) when a committed YAML differs, so CI catches
a pipeline change that was not recompiled (``make workflows`` fixes it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

WORKFLOWS_DIR = Path(__file__).resolve().parent


def compile_preset(name: str, path: str | Path) -> Path:
    """Compile preset ``name`` (see ``workflows.train.PRESETS``) to ``path``."""
    from kfp import compiler

    from workflows.train import PRESETS, train_pipeline

    if name not in PRESETS:
        raise ValueError(f"unknown pipeline preset {name!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[name]
    path = Path(path)
    compiler.Compiler().compile(
        train_pipeline,
        str(path),
        pipeline_name=f"opensora-{name.replace('_', '-')}",
        pipeline_display_name=f"Open-Sora {preset.description}",
        pipeline_parameters=preset.parameters,
    )
    return path


def compile_curate(path: str | Path) -> Path:
    """Compile the curation pipeline (``workflows.curate``) to ``path``."""
    from kfp import compiler

    from workflows.curate import curate_pipeline

    path = Path(path)
    compiler.Compiler().compile(curate_pipeline, str(path), pipeline_display_name="Open-Sora data curation")
    return path


def stale_files(out_dir: str | Path = WORKFLOWS_DIR) -> list[str]:
    """Names of committed YAMLs that differ from a fresh compile (or are missing)."""
    from workflows.train import PRESETS

    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, preset in PRESETS.items():
            fresh = compile_preset(name, Path(tmp) / preset.filename).read_text()
            committed = Path(out_dir) / preset.filename
            if not committed.is_file() or committed.read_text() != fresh:
                stale.append(preset.filename)
        from workflows.curate import FILENAME

        committed = Path(out_dir) / FILENAME
        fresh = compile_curate(Path(tmp) / FILENAME).read_text()
        if not committed.is_file() or committed.read_text() != fresh:
            stale.append(FILENAME)
    return stale


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m workflows.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a committed YAML is stale")
    parser.add_argument("--out-dir", default=str(WORKFLOWS_DIR), help="where the YAML files go")
    args = parser.parse_args(argv)
    from workflows.train import PRESETS

    if args.check:
        stale = stale_files(args.out_dir)
        if stale:
            print(f"stale compiled pipelines: {', '.join(stale)}; run `make workflows`", file=sys.stderr)
            return 1
        print("compiled pipelines are up to date")
        return 0
    for name, preset in PRESETS.items():
        path = compile_preset(name, Path(args.out_dir) / preset.filename)
        print(f"wrote {path}")
    from workflows.curate import FILENAME

    print(f"wrote {compile_curate(Path(args.out_dir) / FILENAME)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
