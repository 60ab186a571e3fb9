"""`python -m kubetune_operator`: run the operator (one replica; standalone, no peering)."""

from __future__ import annotations

import sys

import kopf

from kubetune_operator import handlers  # noqa: F401  (registers the handlers)
from kubetune_operator.config import OperatorConfig


def main() -> int:
    config = OperatorConfig.from_env()
    kopf.configure(verbose="--verbose" in sys.argv[1:])
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz",
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
