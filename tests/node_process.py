"""A master node with the sample engines (a thread, a thread with a process pool, an engine process with
its own pool), for fault tests: `python -m tests.node_process`. The same start-up as `aifactory up`."""

from aifactory.launch import run_master
from aifactory.logs import configure_logging
from aifactory.settings import load_settings
from tests.sample_engines import POOLED, PROCESS_POOLED, TICKER

if __name__ == "__main__":
    settings = load_settings()
    configure_logging(settings)
    run_master(settings, specs=[TICKER, POOLED, PROCESS_POOLED])
