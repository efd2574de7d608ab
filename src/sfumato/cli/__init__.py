"""The `sfumato` command: `generate` images, show `info` about a model folder.

Every user mistake (a missing file, a size the VAE cannot take, an unknown sampler) is one line on
stderr and exit code 2, found before anything is loaded; `--debug` shows tracebacks instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from .errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    from . import generate, info, train

    parser = argparse.ArgumentParser(
        prog="sfumato",
        description="Generate images with diffusion models; works offline with the bundled model.",
    )
    parser.add_argument("--version", action="version", version=f"sfumato {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    generate.add_parser(commands)
    info.add_parser(commands)
    train.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as err:
        if args.debug:
            raise
        print(f"sfumato: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sfumato: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
