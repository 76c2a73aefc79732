"""`make cluster`: a three-node RabbitMQ cluster of our own on this machine (``seteli_shared.rabbitnodes``: new
node names ``seteli<n>x<pid>@localhost``, their own ports and data directories; the machine's own
``rabbit@localhost`` is never touched; needs root, as the server drops to the ``rabbitmq`` user) and the whole
system on it, as `make run` starts it (SCALE=N for several instances of each service), with AMQP_URL listing the
three nodes: each service connects to the first that answers and moves to the next when it loses one.

While it runs, stop a node and bring it back from another terminal with the commands it prints
(``rabbitmqctl -n <node> stop_app`` / ``start_app``). Ctrl-C stops the system and removes the nodes and
their data. NODES=n starts another number of nodes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from seteli_shared import rabbitnodes

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    why = rabbitnodes.available()
    if why:
        print(f"cannot start a cluster here: {why}", file=sys.stderr)
        return 1
    size = int(os.environ.get("NODES", "3"))
    print(f"starting a {size}-node RabbitMQ cluster (about a minute) ...", flush=True)
    cluster = rabbitnodes.Cluster.start(size)
    try:
        url = ",".join(cluster.urls)
        print(f"RabbitMQ cluster: AMQP_URL={url}", flush=True)
        for node in cluster.nodes:
            print(f"  {node.nodename} on :{node.port}  (lose it: rabbitmqctl -n {node.nodename} stop_app; "
                  f"back: rabbitmqctl -n {node.nodename} start_app)", flush=True)
        system = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_all.py")], env={**os.environ,
                                                                                                "AMQP_URL": url})

        def forward(signum: int, _frame: object) -> None:
            system.send_signal(signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        return system.wait()
    finally:
        print("removing the cluster's nodes", flush=True)
        cluster.remove()


if __name__ == "__main__":
    sys.exit(main())
