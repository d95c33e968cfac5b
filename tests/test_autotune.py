"""Auto-tune: hardware → profile, explicit settings win, realtime shrinks limits under memory pressure."""

from __future__ import annotations

from aifactory.autotune import Hardware, detect_hardware, recommend, resolve_profile
from aifactory.settings import Settings


def hw(total: float, available: float, device: str = "cpu", cores: int = 4) -> Hardware:
    return Hardware(cpu_cores=cores, total_ram_gb=total, available_ram_gb=available, device=device)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


def test_the_table_follows_memory_and_gpu() -> None:
    assert recommend(hw(64, 60, "cuda"), realtime=True)["model_size"] == "base"
    assert recommend(hw(32, 30), realtime=True)["train_seq_len"] == 512
    assert recommend(hw(16, 14), realtime=True)["train_batch_size"] == 4
    assert recommend(hw(8, 7), realtime=True)["model_size"] == "tiny"
    small = recommend(hw(4, 3.5, cores=2), realtime=True)
    assert small["train_seq_len"] == 128 and small["max_crawler_workers"] == 4
    assert small["pytorch_cpu_threads"] == 1


def test_gpu_presets_follow_the_gpus_memory() -> None:
    def on_gpu(memory: float) -> dict:
        machine = Hardware(
            cpu_cores=16, total_ram_gb=128, available_ram_gb=120, device="cuda", gpu_memory_gb=memory
        )
        return recommend(machine, realtime=True)

    assert (
        on_gpu(0.0)["model_size"] == "base" and on_gpu(0.0)["train_seq_len"] == 512
    )  # unknown: the original's
    assert (on_gpu(16)["model_size"], on_gpu(16)["train_seq_len"]) == ("base", 1024)
    assert on_gpu(24)["train_batch_size"] > on_gpu(16)["train_batch_size"]
    big = on_gpu(139)
    assert (big["model_size"], big["train_seq_len"], big["train_batch_size"]) == ("medium", 2048, 32)


def test_realtime_lowers_memory_sensitive_limits_when_memory_is_short() -> None:
    calm = recommend(hw(32, 30), realtime=True)
    pressed = recommend(hw(32, 1.0), realtime=True)
    assert pressed["train_batch_size"] < calm["train_batch_size"]
    assert pressed["train_seq_len"] < calm["train_seq_len"]
    assert pressed["max_crawler_workers"] < calm["max_crawler_workers"]
    assert recommend(hw(32, 1.0), realtime=False) == calm


def test_explicit_settings_always_win() -> None:
    profile = resolve_profile(settings(model_size="medium", max_crawler_workers=3), hw(4, 3))
    assert profile.model_size == "medium" and profile.max_crawler_workers == 3
    assert "model_size" not in profile.auto_chosen and "train_seq_len" in profile.auto_chosen


def test_without_auto_tune_the_original_defaults_apply() -> None:
    profile = resolve_profile(settings(auto_tune=False), hw(128, 120, "cuda", cores=8))
    assert (profile.model_size, profile.train_batch_size, profile.train_seq_len) == ("small", 4, 512)
    assert profile.max_generate_tokens == 256 and profile.max_crawler_workers == 8
    assert profile.pytorch_cpu_threads == 7 and profile.auto_chosen == ()


def test_this_machine_is_detected() -> None:
    found = detect_hardware()
    assert (
        found.cpu_cores >= 1 and found.total_ram_gb > 0 and 0 < found.available_ram_gb <= found.total_ram_gb
    )
    assert found.device in ("cpu", "cuda", "mps")
