"""Import cost of sfumato and diffusers, measured side by side in fresh processes (A B A B ...).

    python bench/import_time.py [--runs 7]

Prints the median wall time of each statement minus that of a bare interpreter.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "python (bare)": "pass",
    "import sfumato": "import sfumato",
    "import diffusers": "import diffusers",
    "from sfumato import ModelMixin": "from sfumato import ModelMixin",
    "from diffusers import ModelMixin": "from diffusers import ModelMixin",
}


def wall_time(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    for _ in range(args.runs):  # interleaved so that drift affects every row alike
        for name, statement in STATEMENTS.items():
            times[name].append(wall_time(statement))
    bare = statistics.median(times["python (bare)"])
    print(f"{'statement':<36} {'median s':>9} {'minus bare':>11}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<36} {median:9.3f} {median - bare:11.3f}")
    ours = statistics.median(times["import sfumato"]) - bare
    theirs = statistics.median(times["import diffusers"]) - bare
    print(
        f"\nimport sfumato costs {ours:.3f} s over a bare interpreter; import diffusers {theirs:.3f} s "
        f"({theirs / max(ours, 1e-6):.0f}x more)"
    )


if __name__ == "__main__":
    main()
