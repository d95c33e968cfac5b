"""The trainer makes room for chat: fewer threads and a lower priority while requests are served."""

from __future__ import annotations

import os
import time

import torch

from aifactory.train import sharing
from aifactory.train.engine import status_line
from aifactory.train.runtime import setup_runtime
from aifactory.train.sharing import LINGER_SEC, Load, LoadController, Plan
from aifactory.train.trainer import Trainer
from tests.train.tiny import corpus_source, tiny_settings


def test_the_plan_follows_the_requests_in_flight(make_settings) -> None:
    settings = make_settings(train_yield_threads=1, train_yield_nice=10)
    controller = LoadController(settings, threads=4)
    base = controller.base_nice
    assert controller.decide(Load(requests=0)) == Plan(4, base)
    busy = controller.decide(Load(requests=2))
    assert busy.threads == 1 and busy.reason == "yielding to 2 chat requests"
    assert busy.nice == (min(19, base + 10) if controller.may_renice else base)
    controller.may_renice = False  # a process that could not raise its priority again keeps it
    assert controller.decide(Load(requests=1)).nice == base
    assert controller.decide(Load(requests=0), lingering=True).yielding


def test_polling_applies_the_published_load_and_restores_after_a_pause(make_settings) -> None:
    settings = make_settings(train_yield_threads=1, train_yield_nice=3)
    threads = torch.get_num_threads()
    controller = LoadController(settings, threads=2)
    torch.set_num_threads(2)
    try:
        sharing.publish_load(settings, {"in_flight": 3})
        assert controller.poll(now=100.0) and torch.get_num_threads() == 1
        assert controller.describe().startswith("yielding to 3 chat requests: 1 thread")
        if controller.may_renice:
            assert os.getpriority(os.PRIO_PROCESS, 0) == controller.base_nice + 3
            assert "nice" in controller.describe()
        assert not controller.poll(now=100.1)  # not looked at again this soon
        sharing.publish_load(settings, {"in_flight": 0})
        controller.poll(now=101.0)  # a pause between two chat turns: still yielding
        assert torch.get_num_threads() == 1 and controller.plan.yielding
        assert controller.poll(now=100.0 + LINGER_SEC + 0.5)
        assert torch.get_num_threads() == 2 and controller.describe() == ""
        assert os.getpriority(os.PRIO_PROCESS, 0) == controller.base_nice
    finally:
        controller.restore()
        torch.set_num_threads(threads)


def test_a_stale_load_file_means_nobody_is_waiting(make_settings) -> None:
    settings = make_settings()
    sharing.publish_load(settings, {"in_flight": 5})
    path = sharing.load_path(settings)
    old = time.time() - 2 * sharing.LOAD_STALE_SEC
    path.write_text(path.read_text().replace('"updated_at": ', '"updated_at": ' + str(old) + ', "x": '))
    assert sharing.read_load(settings) == {}
    sharing.clear_load(settings)
    assert sharing.read_load(settings) == {}


def test_the_trainer_yields_during_its_steps_and_says_so(make_settings) -> None:
    settings = tiny_settings(make_settings, pytorch_cpu_threads=2, train_yield_threads=1, train_yield_nice=0)
    threads = torch.get_num_threads()
    trainer = Trainer.create(settings, corpus_source(), setup_runtime(settings, "cpu"), None)
    try:
        sharing.publish_load(settings, {"in_flight": 1})
        trainer.train_step()
        assert torch.get_num_threads() == 1
        assert "yielding to 1 chat request: 1 thread" in status_line(trainer)
        sharing.clear_load(settings)
        trainer.sharing._busy_at = -LINGER_SEC  # the pause is over
        trainer.sharing._checked = 0.0
        trainer.train_step()
        assert torch.get_num_threads() == 2 and "yielding" not in status_line(trainer)
    finally:
        torch.set_num_threads(threads)


def test_auto_threads_take_every_free_core_and_leave_the_busy_ones(make_settings) -> None:
    settings = make_settings(train_yield_threads=1, train_yield_nice=0)
    controller = LoadController(settings, threads=3, auto_max=4)
    assert controller.decide(Load()).threads == 4  # the collector and text engines are idle: all cores
    assert controller.decide(Load(others_busy=0.1)).threads == 4  # noise
    assert controller.decide(Load(others_busy=1.0)).threads == 3  # one core at work elsewhere
    assert controller.decide(Load(others_busy=2.6)).threads == 1
    assert controller.decide(Load(others_busy=9.0)).threads == 1  # never none
    assert controller.decide(Load(requests=1, others_busy=0.0)).threads == 1  # the chat's yield on top
    fixed = LoadController(settings, threads=3)  # PYTORCH_CPU_THREADS set: what it says
    assert fixed.decide(Load(others_busy=2.0)).threads == 3


def test_the_meter_sees_another_process_working() -> None:
    import subprocess
    import sys

    from tests.conftest import wait_for

    meter = sharing.CpuMeter()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter.others_busy(2)

        def seen() -> bool:  # each look covers the CPU use since the previous one
            return meter.others_busy(2) > 0.3 or bool(time.sleep(0.5))

        wait_for(seen, timeout=30, what="the spinning process's CPU use")
    finally:
        busy.kill()
        busy.wait()


def test_the_status_shows_the_trainers_thread_count(make_settings) -> None:
    settings = tiny_settings(
        make_settings, pytorch_cpu_threads=None, train_yield_threads=1, train_yield_nice=0
    )
    threads = torch.get_num_threads()
    trainer = Trainer.create(settings, corpus_source(), setup_runtime(settings, "cpu"), None)
    try:
        from aifactory.autotune import cpu_cores

        assert torch.get_num_threads() == cpu_cores()  # auto: all cores on an idle machine
        trainer.train_step()
        assert (
            f"CPU thread{'s' if torch.get_num_threads() > 1 else ''} (auto, {cpu_cores()} cores)"
            in status_line(trainer)
        )
    finally:
        trainer.sharing.restore()
        torch.set_num_threads(threads)
