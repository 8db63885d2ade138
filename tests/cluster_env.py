"""What the chain's dask workers see in their environment (tests of chain.cluster's worker settings)."""

from pathlib import Path
from typing import Any

NAMES = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")


def workers_environ(cluster_cfg: Any, workdir: Path | None = None) -> list[dict[str, str | None]]:
    """``NAMES`` as each worker of a client opened by ``chain.cluster.open_client`` sees them (then closed)."""
    from chain.cluster import open_client

    def read() -> dict[str, str | None]:  # nested: cloudpickle sends it by value (a worker job cannot import the tests)
        import os

        return {k: os.environ.get(k) for k in NAMES}

    client = open_client(cluster_cfg, workdir)
    try:
        return list(client.run(read).values())
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
