"""python3 -m images [--cache-dir DIR]: build or find the test guest, print it as JSON.

Exit codes are harness/core/errors.py's: 3 when the guest cannot be built (a missing package or
tool, apt without lists), with the next step on stderr.
"""

import argparse
import json
import sys
from pathlib import Path

from harness.core.errors import EnvironmentProblem, fail

from .guest import ImageError, ensure_guest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m images", description=__doc__)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache root (default ~/.cache/qemu-snap-harness/images)",
    )
    args = parser.parse_args(argv)
    try:
        guest = ensure_guest(args.cache_dir, log=lambda msg: print(msg, file=sys.stderr))
    except ImageError as exc:
        return fail(EnvironmentProblem(f"cannot build the test guest: {exc}",
                                       hint="`python3 build.py setup` installs what the "
                                            "builder needs; then `python3 -m images` again"))
    print(json.dumps(guest.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
