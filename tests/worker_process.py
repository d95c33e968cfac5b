"""A worker node with the sample ticker engine, for multi-process tests: `python -m tests.worker_process`."""

from aifactory.launch import run_worker
from aifactory.logs import configure_logging
from aifactory.settings import load_settings
from tests.sample_engines import TICKER

if __name__ == "__main__":
    settings = load_settings(system_role="worker")
    configure_logging(settings)
    run_worker(settings, specs=[TICKER])
