"""
What the access log costs per small HTTP/2 GET: ``bench/micro_h2.py`` run with
``logging.basicConfig(level=INFO, stream=...)`` (asphalt's default logging, to a file), or at
``WARNING`` with ``--off``. The access log's cost is the difference between the two, best
taken as instructions (callgrind at two ``--requests``, the difference per request)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/micro_accesslog.py [--off] [--log-file PATH] --requests N

Every other option is ``micro_h2.py``'s. The log goes to ``--log-file`` (default /dev/null).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import micro_h2  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--off", action="store_true", help="log at WARNING: no access lines")
    parser.add_argument("--log-file", default=os.devnull, help="where the log goes (default: %(default)s)")
    args, rest = parser.parse_known_args()
    with open(args.log_file, "a") as stream:
        logging.basicConfig(level=logging.WARNING if args.off else logging.INFO, stream=stream)
        sys.argv[1:] = rest
        micro_h2.main()
        logging.shutdown()


if __name__ == "__main__":
    main()
