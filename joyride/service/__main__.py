"""``python -m joyride.service --config JSON [--ready-fd N]``: the background service.

``joyride attach`` starts this; run it by hand only for debugging.
"""

from __future__ import annotations

import argparse
import logging
import sys

from joyride.errors import JoyrideError
from joyride.service.launch import config_from_json, run_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m joyride.service")
    parser.add_argument("--config", required=True, help="service configuration (JSON)")
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="file descriptor to report readiness on (one JSON line)")
    parser.add_argument("--helper-fd", type=int, default=None,
                        help="socket to the supervisor's privileged helper")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s joyride-service[%(process)d] %(levelname)s "
                               "%(name)s: %(message)s")
    try:
        return run_service(config_from_json(args.config), ready_fd=args.ready_fd,
                           helper_fd=args.helper_fd)
    except JoyrideError as exc:
        logging.getLogger("joyride.service").error("%s", exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
